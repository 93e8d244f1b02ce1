//! Multi-head self-attention with rotary embeddings (`attention.self` + `attention.output`).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::norm::{layer_norm, Norm};
use super::rotary::RotaryEmbedding;
use crate::config::EsmConfig;

/// `encoder.layer.N.attention`: pre-norm, self-attention, output projection and residual.
#[derive(Debug, Clone)]
pub struct SelfAttention {
    norm: Norm,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    /// Loads from `encoder.layer.N.attention`.
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        let h = config.hidden_size;
        let sv = vb.pp("self");
        Ok(Self {
            norm: layer_norm(h, config.layer_norm_eps, vb.pp("LayerNorm"))?,
            query: candle_nn::linear(h, h, sv.pp("query"))?,
            key: candle_nn::linear(h, h, sv.pp("key"))?,
            value: candle_nn::linear(h, h, sv.pp("value"))?,
            output: candle_nn::linear(h, h, vb.pp("output").pp("dense"))?,
            heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    fn split_heads(&self, xs: Tensor, batch: usize, seq: usize) -> Result<Tensor> {
        xs.reshape((batch, seq, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `xs` `(batch, tokens, hidden)`; returns the residual output and, when asked, the attention
    /// probabilities `(batch, heads, tokens, tokens)`.
    pub fn forward(
        &self,
        xs: &Tensor,
        bias: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        return_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (batch, seq, hidden) = xs.dims3()?;
        let normed = self.norm.forward(xs)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads((self.query.forward(&normed)? * scale)?, batch, seq)?;
        let k = self.split_heads(self.key.forward(&normed)?, batch, seq)?;
        let v = self.split_heads(self.value.forward(&normed)?, batch, seq)?;
        let q = RotaryEmbedding::apply(&q, cos, sin)?;
        let k = RotaryEmbedding::apply(&k, cos, sin)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        let out = (self.output.forward(&context)? + xs)?;
        Ok((out, return_probs.then_some(probs)))
    }
}
