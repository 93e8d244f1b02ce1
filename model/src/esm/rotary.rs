//! Rotary position embeddings as in ESM-2 (`rotate_half` convention, base 10000).

use candle_core::{DType, Device, Result, Tensor};

/// Precomputed rotary cosine and sine tables.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    /// Tables for heads of width `head_dim` and up to `max_positions` tokens.
    pub fn new(head_dim: usize, max_positions: usize, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / 10000f32.powf(i as f32 / head_dim as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        let t = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    /// `(tokens, head_dim/2)` cosine and sine tables for a sequence length.
    pub fn cos_sin(&self, seq_len: usize) -> Result<(Tensor, Tensor)> {
        let max = self.cos.dim(0)?;
        if seq_len > max {
            candle_core::bail!("sequence of {seq_len} tokens exceeds the {max} rotary positions");
        }
        Ok((
            self.cos.narrow(0, 0, seq_len)?.contiguous()?,
            self.sin.narrow(0, 0, seq_len)?.contiguous()?,
        ))
    }

    /// Rotates `(batch, heads, tokens, head_dim)`; uses the fused kernel at inference and the
    /// differentiable form when gradients are tracked.
    pub fn apply(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let cos = cos.to_dtype(xs.dtype())?;
        let sin = sin.to_dtype(xs.dtype())?;
        if xs.track_op() {
            candle_nn::rotary_emb::rope_slow(xs, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&xs.contiguous()?, &cos, &sin)
        }
    }
}
