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
    projections: Projections,
    output: Linear,
    heads: usize,
    head_dim: usize,
}

/// The query, key and value projections: separate while they are trainable variables, stacked
/// into one `(3·hidden, hidden)` matrix otherwise (one GEMM instead of three).
#[derive(Debug, Clone)]
enum Projections {
    Separate {
        query: Linear,
        key: Linear,
        value: Linear,
    },
    Fused(Linear),
}

impl SelfAttention {
    /// Loads from `encoder.layer.N.attention`.
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        let h = config.hidden_size;
        let sv = vb.pp("self");
        let query = candle_nn::linear(h, h, sv.pp("query"))?;
        let key = candle_nn::linear(h, h, sv.pp("key"))?;
        let value = candle_nn::linear(h, h, sv.pp("value"))?;
        let trainable = [&query, &key, &value]
            .iter()
            .any(|l| l.weight().is_variable() || l.bias().is_some_and(Tensor::is_variable));
        let projections = if trainable {
            Projections::Separate { query, key, value }
        } else {
            let stack = |f: fn(&Linear) -> Option<&Tensor>| -> Result<Tensor> {
                let parts = [&query, &key, &value]
                    .iter()
                    .map(|l| {
                        f(l).cloned()
                            .ok_or_else(|| candle_core::Error::Msg("no bias".into()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?.contiguous()
            };
            let weight = stack(|l| Some(l.weight()))?;
            let bias = stack(Linear::bias)?;
            Projections::Fused(Linear::new(weight, Some(bias)))
        };
        Ok(Self {
            norm: layer_norm(h, config.layer_norm_eps, vb.pp("LayerNorm"))?,
            projections,
            output: candle_nn::linear(h, h, vb.pp("output").pp("dense"))?,
            heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        })
    }

    /// The pre-attention layer norm.
    pub(crate) fn norm(&self) -> &candle_nn::LayerNorm {
        self.norm.inner()
    }

    /// The stacked Q/K/V projection and the output projection, to replace their weights;
    /// `None` while the projections are separate trainable variables.
    pub(crate) fn projections_mut(&mut self) -> Option<(&mut Linear, &mut Linear)> {
        match &mut self.projections {
            Projections::Fused(l) => Some((l, &mut self.output)),
            Projections::Separate { .. } => None,
        }
    }

    /// The stacked `(3·hidden, hidden)` Q/K/V projection, when the weights are not trainable.
    pub(crate) fn fused_qkv(&self) -> Option<&Linear> {
        match &self.projections {
            Projections::Fused(l) => Some(l),
            Projections::Separate { .. } => None,
        }
    }

    /// The output projection.
    pub(crate) fn output(&self) -> &Linear {
        &self.output
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
        let (q, k, v) = match &self.projections {
            Projections::Separate { query, key, value } => (
                query.forward(&normed)?,
                key.forward(&normed)?,
                value.forward(&normed)?,
            ),
            Projections::Fused(qkv) => {
                let qkv = qkv.forward(&normed)?;
                (
                    qkv.narrow(2, 0, hidden)?,
                    qkv.narrow(2, hidden, hidden)?,
                    qkv.narrow(2, 2 * hidden, hidden)?,
                )
            }
        };
        let q = self.split_heads((q * scale)?, batch, seq)?;
        let k = self.split_heads(k, batch, seq)?;
        let v = self.split_heads(v, batch, seq)?;
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
