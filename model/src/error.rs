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
    /// The sequence is longer than the caller accepts (a length limit, under any policy).
    #[error("sequence of {length} residues is longer than the accepted maximum of {limit} (plm.max_length)")]
    SequenceOverLimit {
        /// Residues in the sequence.
        length: usize,
        /// The accepted maximum.
        limit: usize,
    },
    /// A request would need more memory than allowed (estimated from its shape before it runs).
    #[error("{what} would need an estimated {needed_mb} MB of memory, over the limit of {limit_mb} MB (plm.max_request_mb); {hint}")]
    OverMemoryLimit {
        /// What the request is.
        what: String,
        /// Estimated peak, MB.
        needed_mb: u64,
        /// The limit, MB.
        limit_mb: u64,
        /// How to get under it.
        hint: String,
    },
    /// An answer larger than one SQL value may be.
    #[error("the answer would be {size_mb} MB, larger than the {limit_mb} MB PostgreSQL allows in one value; {hint}")]
    AnswerTooLarge {
        /// Size of the answer, MB.
        size_mb: u64,
        /// The limit, MB.
        limit_mb: u64,
        /// How to get under it.
        hint: String,
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
    /// A bug or a failure of the machinery, not of the input.
    #[error("internal error: {0}")]
    Internal(String),
    /// A feature this build or this model does not have.
    #[error("{0}")]
    NotSupported(String),
    /// An error from the tensor library.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The shared inference worker cannot be reached or ended while serving a request.
    #[error("inference server unavailable: {0}")]
    WorkerUnavailable(String),
    /// A request larger than the worker accepts.
    #[error("request of {bytes} bytes exceeds the inference server's limit of {limit} bytes (plm.max_request_mb)")]
    RequestTooLarge {
        /// Encoded size of the request.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// An error raised in the inference worker, with its class and message.
    #[error("{message}")]
    Remote {
        /// What kind of error it was.
        class: ErrorClass,
        /// The worker's message.
        message: String,
    },
    /// The caller's interrupt check asked to stop ([`crate::EngineOptions::interrupt_check`]).
    #[error("the request was cancelled")]
    Cancelled,
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

/// Kinds of error, for mapping to error codes (e.g. SQLSTATE) and across the worker channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorClass {
    /// Bad input: sequence, argument, structure.
    InvalidInput,
    /// The model lacks what was asked for (a task head).
    Unsupported,
    /// A file is missing.
    MissingFile,
    /// A file is unreadable or inconsistent.
    Corrupt,
    /// An I/O failure.
    Io,
    /// A request over a size limit.
    TooLarge,
    /// The inference worker is unavailable.
    Unavailable,
    /// A bug or a tensor-library failure.
    Internal,
}

impl PlmError {
    /// The kind of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            PlmError::EmptySequence
            | PlmError::InvalidResidue { .. }
            | PlmError::SequenceTooLong { .. }
            | PlmError::SequenceOverLimit { .. }
            | PlmError::InvalidArgument(_)
            | PlmError::InvalidStructure(_) => ErrorClass::InvalidInput,
            PlmError::MissingHead { .. } | PlmError::NotSupported(_) => ErrorClass::Unsupported,
            PlmError::MissingFile { .. } => ErrorClass::MissingFile,
            PlmError::BadFile { .. } => ErrorClass::Corrupt,
            PlmError::Io { .. } => ErrorClass::Io,
            PlmError::RequestTooLarge { .. }
            | PlmError::OverMemoryLimit { .. }
            | PlmError::AnswerTooLarge { .. } => ErrorClass::TooLarge,
            // Only the inference server stops work this way, when its client has gone.
            PlmError::WorkerUnavailable(_) | PlmError::Cancelled => ErrorClass::Unavailable,
            PlmError::Remote { class, .. } => *class,
            PlmError::Candle(_) | PlmError::Internal(_) => ErrorClass::Internal,
        }
    }

    /// Convenience constructor for [`PlmError::BadFile`].
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        PlmError::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
