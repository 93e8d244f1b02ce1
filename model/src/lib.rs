//! `plm-model`: protein language models (ESM-2) in candle.
//!
//! - [`tokenizer`]: strict sequence validation and the ESM vocabulary;
//! - [`esm`]: the ESM-2 architecture (`EsmForMaskedLM`), loadable from Hugging Face weights;
//! - [`checkpoint`]: the checkpoint directory format shared with the trainer and the extension;
//! - [`engine`]: batched inference with length bucketing, pooling, windows and caching;
//! - [`cache`]: the byte-bounded embedding cache;
//! - [`structure`], [`graph`], [`gnn`]: structures, residue graphs and graph neural network layers;
//! - [`surface`]: the protein-interface prior of a supplied structure;
//! - [`heads`], [`predict`]: task heads (function, interaction, binding sites) and their predictions;
//!
//! Serving (the model registry of a process, the inference server and its protocol) lives in
//! the `plm-serve` crate.

pub mod batching;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod esm;
pub mod gnn;
pub mod graph;
pub mod heads;
pub mod homology;
pub mod neighbours;
pub mod pooling;
pub mod predict;
pub mod structure;
pub mod surface;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod window;

pub use cache::{CacheKey, CacheStats, EmbeddingCache};
pub use checkpoint::{Checkpoint, Manifest, Precision};
pub use config::EsmConfig;
pub use device::DeviceSpec;
pub use engine::{
    Engine, EngineOptions, LoadOptions, LongSequencePolicy, Matrix, POOLING_CHUNK_RESIDUES,
};
pub use error::{ErrorClass, PlmError, Result};
pub use esm::EsmForMaskedLM;
pub use heads::{HeadsConfig, TaskHeads};
pub use pooling::Pooling;
pub use tokenizer::ProteinTokenizer;

/// Version of this library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
