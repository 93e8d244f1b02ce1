//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the model library.
#[derive(Debug, thiserror::Error)]
pub enum PlmError {
    /// The input sequence is empty after removing whitespace.
    #[error("empty protein sequence")]
    EmptySequence,
    /// A character that is not an accepted amino-acid code.
    #[error("invalid residue '{character}' at position {position} (accepted: the 20 standard amino acids and X, B, Z, U, O)")]
    InvalidResidue {
        /// The offending character.
        character: char,
        /// 1-based position in the input as given (whitespace counted).
        position: usize,
    },
    /// The sequence exceeds the model limit and the policy is to refuse it.
    #[error("sequence of {length} residues exceeds the model limit of {limit}; use the 'window' long-sequence policy to embed it with overlapping windows")]
    SequenceTooLong {
        /// Residues in the sequence.
        length: usize,
        /// Maximum residues the model accepts.
        limit: usize,
    },
    /// A file of a checkpoint is missing.
    #[error("missing file {path}: {what}")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file is for.
        what: String,
    },
    /// A file of a checkpoint could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An argument outside its allowed range or set.
    #[error("{0}")]
    InvalidArgument(String),
    /// A requested task head is not part of the checkpoint.
    #[error("model '{model}' has no {head} head")]
    MissingHead {
        /// The model name.
        model: String,
        /// The head that was asked for.
        head: String,
    },
    /// A PDB or mmCIF text that cannot be used.
    #[error("invalid structure: {0}")]
    InvalidStructure(String),
    /// An error from the tensor library.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// An I/O error with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, PlmError>;

impl PlmError {
    /// Convenience constructor for [`PlmError::BadFile`].
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        PlmError::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
