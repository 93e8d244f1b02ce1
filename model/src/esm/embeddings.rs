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

    /// The embedding output of the packed real tokens of a batch, computed on the host: the
    /// same values as [`Embeddings::forward`] at those positions. `ids` and `mask` are the
    /// flattened `(batch, tokens)` inputs.
    pub(crate) fn forward_packed(
        &self,
        ids: &[u32],
        mask: &[f32],
        packing: &super::fast::Packing,
        config: &EsmConfig,
    ) -> Result<Vec<f32>> {
        let h = config.hidden_size;
        let table = self.word_embeddings.embeddings();
        let guard = table.storage_and_layout();
        let table = super::fast::host_slice(&guard)?;
        let tokens = if packing.spans.is_empty() {
            0
        } else {
            ids.len() / packing.spans.len()
        };
        let mut out = Vec::with_capacity(packing.rows() * h);
        for (b, &(start, len)) in packing.spans.iter().enumerate() {
            let row_ids = &ids[b * tokens..(b + 1) * tokens];
            let scale = if config.token_dropout {
                let masked = row_ids
                    .iter()
                    .filter(|&&t| t == config.mask_token_id)
                    .count() as f32;
                let real: f32 = mask[b * tokens..(b + 1) * tokens].iter().sum();
                let observed = masked / real;
                (1.0 - MASK_RATIO_TRAIN as f32) / (1.0 - observed)
            } else {
                1.0
            };
            for &(_, t) in &packing.origin[start..start + len] {
                let id = row_ids[t] as usize;
                if id >= config.vocab_size {
                    candle_core::bail!("token id {id} out of range");
                }
                let src = &table[id * h..(id + 1) * h];
                if config.token_dropout && row_ids[t] == config.mask_token_id {
                    out.extend(std::iter::repeat_n(0.0, h));
                } else if scale == 1.0 {
                    out.extend_from_slice(src);
                } else {
                    out.extend(src.iter().map(|v| v * scale));
                }
            }
        }
        if let Some(ln) = &self.layer_norm {
            let (w, b) = (ln.inner().weight().clone(), ln.inner().bias().cloned());
            let b = b.ok_or_else(|| candle_core::Error::Msg("missing bias".into()))?;
            let (wg, bg) = (w.storage_and_layout(), b.storage_and_layout());
            let src = out.clone();
            super::kernels::layer_norm_rows(
                &src,
                &mut out,
                super::fast::host_slice(&wg)?,
                super::fast::host_slice(&bg)?,
                config.layer_norm_eps as f32,
            );
        }
        // The tensor path multiplies by the mask after the norm.
        for (r, &(b, t)) in packing.origin.iter().enumerate() {
            let m = mask[b * tokens + t];
            if m != 1.0 {
                out[r * h..(r + 1) * h].iter_mut().for_each(|v| *v *= m);
            }
        }
        Ok(out)
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
