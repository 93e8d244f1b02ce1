//! Token embeddings with ESM-2's token-dropout rescaling.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::norm::{layer_norm, Norm};
use crate::config::EsmConfig;

/// Fraction of tokens masked during ESM-2 pretraining (15 % selected, 80 % of them masked).
const MASK_RATIO_TRAIN: f64 = 0.15 * 0.8;

/// `esm.embeddings`.
#[derive(Debug, Clone)]
pub struct Embeddings {
    word_embeddings: Embedding,
    layer_norm: Option<Norm>,
}

impl Embeddings {
    /// Loads `word_embeddings` (and `layer_norm` when `emb_layer_norm_before`).
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        let word_embeddings = candle_nn::embedding(
            config.vocab_size,
            config.hidden_size,
            vb.pp("word_embeddings"),
        )?;
        let layer_norm = if config.emb_layer_norm_before.unwrap_or(false) {
            Some(layer_norm(
                config.hidden_size,
                config.layer_norm_eps,
                vb.pp("layer_norm"),
            )?)
        } else {
            None
        };
        Ok(Self {
            word_embeddings,
            layer_norm,
        })
    }

    /// The embedding matrix, shared with the LM decoder.
    pub fn word_weight(&self) -> &Tensor {
        self.word_embeddings.embeddings()
    }

    /// Dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.word_embeddings.embeddings().dtype()
    }

    /// `(batch, tokens)` ids and f32 mask to `(batch, tokens, hidden)` embeddings.
    pub fn forward(&self, input_ids: &Tensor, mask: &Tensor, config: &EsmConfig) -> Result<Tensor> {
        let mut xs = self.word_embeddings.forward(input_ids)?;
        let dtype = xs.dtype();
        if config.token_dropout {
            let is_mask = input_ids.eq(config.mask_token_id)?.to_dtype(DType::F32)?;
            let keep = (1.0 - &is_mask)?;
            let observed = (is_mask.sum(1)? / mask.sum(1)?)?;
            let scale = ((1.0 - observed)?.recip()? * (1.0 - MASK_RATIO_TRAIN))?;
            let factor = keep.broadcast_mul(&scale.unsqueeze(1)?)?;
            xs = xs.broadcast_mul(&factor.unsqueeze(2)?.to_dtype(dtype)?)?;
        }
        if let Some(ln) = &self.layer_norm {
            xs = ln.forward(&xs)?;
        }
        xs.broadcast_mul(&mask.unsqueeze(2)?.to_dtype(dtype)?)
    }
}
