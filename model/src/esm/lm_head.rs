//! Masked-language-model head (`lm_head`).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::norm::{layer_norm, Norm};
use crate::config::EsmConfig;

/// Dense, GELU, layer norm, then the decoder (tied to the word embeddings unless stored).
#[derive(Debug, Clone)]
pub struct LmHead {
    dense: Linear,
    norm: Norm,
    decoder: Linear,
}

impl LmHead {
    /// Loads from `lm_head`; `word_weight` is used when `lm_head.decoder.weight` is absent.
    pub fn load(vb: VarBuilder, config: &EsmConfig, word_weight: &Tensor) -> Result<Self> {
        let h = config.hidden_size;
        let decoder_weight = if vb.contains_tensor("decoder.weight") {
            vb.get((config.vocab_size, h), "decoder.weight")?
        } else {
            word_weight.clone()
        };
        let bias = vb.get_with_hints(config.vocab_size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            dense: candle_nn::linear(h, h, vb.pp("dense"))?,
            norm: layer_norm(h, config.layer_norm_eps, vb.pp("layer_norm"))?,
            decoder: Linear::new(decoder_weight, Some(bias)),
        })
    }

    /// `(batch, tokens, hidden)` final hidden state to `(batch, tokens, vocab)` logits.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.dense.forward(xs)?.gelu_erf()?;
        self.decoder.forward(&self.norm.forward(&xs)?)
    }
}
