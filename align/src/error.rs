//! Typed errors of the crate.

use thiserror::Error;

/// Everything that can go wrong when building, loading or searching a reference.
#[derive(Debug, Error)]
pub enum AlignError {
    /// A character that is not an ASCII letter was found in a sequence.
    #[error("invalid residue {residue:?} at position {position}")]
    InvalidResidue {
        /// 0-based position in the sequence.
        position: usize,
        /// The offending character.
        residue: char,
    },
    /// A sequence had no residues.
    #[error("empty sequence")]
    EmptySequence,
    /// A reference entry was rejected; `source` says why.
    #[error("reference entry {id:?}: {source}")]
    InvalidEntry {
        /// Identifier of the entry.
        id: String,
        /// The underlying error.
        #[source]
        source: Box<AlignError>,
    },
    /// The reference holds more residues than the 32-bit index can address.
    #[error("reference too large: {0} residues (at most {max})", max = u32::MAX / 2)]
    ReferenceTooLarge(usize),
    /// A serialised index could not be decoded or failed its consistency checks.
    #[error("corrupt or incompatible index: {0}")]
    CorruptIndex(String),
    /// Encoding the index failed.
    #[error("index encoding failed: {0}")]
    Encode(#[from] postcard::Error),
    /// Reading or writing an index file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
