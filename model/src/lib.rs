//! `plm-model`: protein language models (ESM-2) in candle.
//!
//! - [`tokenizer`]: strict sequence validation and the ESM vocabulary;
//! - [`esm`]: the ESM-2 architecture (`EsmForMaskedLM`), loadable from Hugging Face weights;
//! - [`checkpoint`]: the checkpoint directory format shared with the trainer and the extension;
//! - [`engine`]: batched inference with length bucketing, pooling, windows and caching;
//! - [`cache`]: the byte-bounded embedding cache.

pub mod batching;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod esm;
pub mod pooling;
pub mod tokenizer;
pub mod window;

pub use cache::{CacheKey, CacheStats, EmbeddingCache};
pub use checkpoint::{Checkpoint, Manifest};
pub use config::EsmConfig;
pub use device::DeviceSpec;
pub use engine::{Engine, EngineOptions, LongSequencePolicy, Matrix};
pub use error::{PlmError, Result};
pub use esm::EsmForMaskedLM;
pub use pooling::Pooling;
pub use tokenizer::ProteinTokenizer;

/// Version of this library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
