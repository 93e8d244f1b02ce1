//! One transformer block (`encoder.layer.N`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::attention::SelfAttention;
use super::norm::{layer_norm, Norm};
use super::packed::{PackedBlock, PackedLinear};
use crate::config::EsmConfig;

/// Pre-norm block: attention with residual, then a GELU feed-forward with residual.
#[derive(Debug, Clone)]
pub struct EsmLayer {
    attention: SelfAttention,
    norm: Norm,
    intermediate: Linear,
    output: Linear,
}

impl EsmLayer {
    /// Loads from `encoder.layer.N`.
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            attention: SelfAttention::load(vb.pp("attention"), config)?,
            norm: layer_norm(h, config.layer_norm_eps, vb.pp("LayerNorm"))?,
            intermediate: candle_nn::linear(h, i, vb.pp("intermediate").pp("dense"))?,
            output: candle_nn::linear(i, h, vb.pp("output").pp("dense"))?,
        })
    }

    /// The attention half of the block.
    pub(crate) fn attention(&self) -> &SelfAttention {
        &self.attention
    }

    /// Pre-feed-forward layer norm, first and second feed-forward projections.
    pub(crate) fn feed_forward(&self) -> (&candle_nn::LayerNorm, &Linear, &Linear) {
        (self.norm.inner(), &self.intermediate, &self.output)
    }

    /// Makes the block's four projections int8 or bf16 (see [`super::packed`]): their weights
    /// become the rounded values, and the packed weights of the fast path are returned.
    /// `None` for f32, and while the projections are trainable variables.
    pub(crate) fn quantize(&mut self, precision: crate::Precision) -> Result<Option<PackedBlock>> {
        let Some((qkv, out)) = self.attention.projections_mut() else {
            return Ok(None);
        };
        let (Some(qkv), Some(out), Some(ff1), Some(ff2)) = (
            PackedLinear::pack(qkv, precision)?,
            PackedLinear::pack(out, precision)?,
            PackedLinear::pack(&mut self.intermediate, precision)?,
            PackedLinear::pack(&mut self.output, precision)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(PackedBlock { qkv, out, ff1, ff2 }))
    }

    /// Returns the block output and optionally the attention probabilities.
    pub fn forward(
        &self,
        xs: &Tensor,
        bias: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        return_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (attn, probs) = self.attention.forward(xs, bias, cos, sin, return_probs)?;
        let ff = self
            .intermediate
            .forward(&self.norm.forward(&attn)?)?
            .gelu_erf()?;
        Ok(((self.output.forward(&ff)? + attn)?, probs))
    }
}
