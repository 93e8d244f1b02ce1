//! The low-precision projections of a block for the CPU fast path, whichever precision the
//! model is installed at ([`crate::Precision`]): int8 ([`super::int8`]) or bf16
//! ([`super::bf16`]). Packing also rounds the layer's own weights, so every execution path
//! computes with the model's values.

use candle_core::Result;
use candle_nn::Linear;

use super::bf16::{self, Bf16Linear};
use super::int8::{self, Int8Linear};
use crate::Precision;

/// One projection's packed weights.
#[derive(Debug, Clone)]
pub(crate) enum PackedLinear {
    Int8(Int8Linear),
    Bf16(Bf16Linear),
}

impl PackedLinear {
    /// Rounds `linear`'s weight to `precision` and packs it; `None` for f32.
    pub fn pack(linear: &mut Linear, precision: Precision) -> Result<Option<Self>> {
        Ok(match precision {
            Precision::F32 => None,
            Precision::Int8 => Some(Self::Int8(int8::quantize_linear(linear)?)),
            Precision::Bf16 => Some(Self::Bf16(bf16::quantize_linear(linear)?)),
        })
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        match self {
            Self::Int8(w) => w.out_features(),
            Self::Bf16(w) => w.out_features(),
        }
    }

    /// `out (+)= a · Wᵀ + bias` on the calling thread (see [`Int8Linear::forward_rows`]).
    pub fn forward_rows(&self, out: &mut [f32], a: &[f32], bias: &[f32], accumulate: bool) {
        match self {
            Self::Int8(w) => w.forward_rows(out, a, bias, accumulate),
            Self::Bf16(w) => w.forward_rows(out, a, bias, accumulate),
        }
    }
}

/// The packed projections of one transformer block.
#[derive(Debug, Clone)]
pub(crate) struct PackedBlock {
    /// Stacked query, key and value projections.
    pub qkv: PackedLinear,
    /// Attention output projection.
    pub out: PackedLinear,
    /// First feed-forward projection.
    pub ff1: PackedLinear,
    /// Second feed-forward projection.
    pub ff2: PackedLinear,
}
