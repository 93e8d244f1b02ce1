//! What an engine is loaded with (fixed for its life) and what each call runs under.

use std::str::FromStr;

use candle_core::DType;

use crate::device::DeviceSpec;
use crate::error::{PlmError, Result};

/// How a model is loaded: the device, the precision of its tensors and the compute threads.
/// Fixed for the life of the loaded engine; the precision a model is *installed* at (int8,
/// bf16) comes from its checkpoint, not from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where the model runs.
    pub device: DeviceSpec,
    /// Tensor dtype of an f32 checkpoint on that device (f16 on the CPU loads as f32).
    pub dtype: DType,
    /// Compute threads (0: all cores).
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Cpu,
            dtype: DType::F32,
            threads: 0,
        }
    }
}

/// What to do with sequences longer than the model limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LongSequencePolicy {
    /// Refuse them with [`PlmError::SequenceTooLong`].
    Error,
    /// Embed overlapping windows and average the per-residue outputs.
    Window,
}

impl FromStr for LongSequencePolicy {
    type Err = PlmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "window" | "windows" => Ok(Self::Window),
            other => Err(PlmError::InvalidArgument(format!(
                "unknown long-sequence policy '{other}' (valid: error, window)"
            ))),
        }
    }
}

/// The options one call runs under ([`super::Engine::with_options`] gives a handle with
/// others; nothing is written into the shared loaded model).
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Token budget of one batch, padding included (the rule: [`crate::batching::plan_batches`]).
    pub max_tokens_per_batch: usize,
    /// Policy for sequences over the limit.
    pub long_sequences: LongSequencePolicy,
    /// Residues of one pass (and so the window length); `None` or a larger value means the
    /// model's own limit.
    pub max_residues: Option<usize>,
    /// Longest sequence accepted under either policy; `None`: no limit beyond the policy's.
    pub max_length: Option<usize>,
    /// Residues shared by neighbouring windows.
    pub window_overlap: usize,
    /// Called on the calling thread between batches; `true` stops the work, which then fails
    /// with [`PlmError::Cancelled`]. (In a PostgreSQL backend the check raises the query cancel
    /// itself, as PostgreSQL errors do, and never returns `true`.)
    pub interrupt_check: Option<fn() -> bool>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_tokens_per_batch: 8192,
            long_sequences: LongSequencePolicy::Error,
            max_residues: None,
            max_length: None,
            window_overlap: 256,
            interrupt_check: None,
        }
    }
}
