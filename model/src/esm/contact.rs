//! Attention-based contact head (`esm.contact_head`).
//!
//! For every layer and head the attention map is masked (padding and `<eos>`), stripped of
//! `<cls>`/`<eos>`, symmetrised and APC-corrected, then a logistic regression over all
//! layer×head channels gives contact probabilities. The regression is linear in the channels,
//! so the weighted sum is accumulated layer by layer instead of stacking every map.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::EsmConfig;

/// `contact_head.regression`: one weight per layer×head channel and a bias.
#[derive(Debug, Clone)]
pub struct ContactHead {
    weight: Tensor,
    bias: Tensor,
    heads: usize,
    eos_id: u32,
}

/// Running state of the contact head during a forward pass.
#[derive(Debug)]
pub struct ContactAccumulator {
    sum: Option<Tensor>,
    pair_mask: Tensor,
}

impl ContactHead {
    /// Loads from `contact_head`.
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        let channels = config.num_hidden_layers * config.num_attention_heads;
        let rvb = vb.pp("regression");
        let weight = rvb.get_with_hints(
            (1, channels),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = rvb.get_with_hints(1, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            heads: config.num_attention_heads,
            eos_id: 2,
        })
    }

    /// Starts accumulation for a batch. `mask` is the f32 attention mask.
    pub fn accumulator(&self, input_ids: &Tensor, mask: &Tensor) -> Result<ContactAccumulator> {
        let not_eos = input_ids.ne(self.eos_id)?.to_dtype(DType::F32)?;
        let keep = (not_eos * mask)?; // (batch, tokens)
        let pair_mask = keep
            .unsqueeze(2)?
            .broadcast_mul(&keep.unsqueeze(1)?)?
            .unsqueeze(1)?;
        Ok(ContactAccumulator {
            sum: None,
            pair_mask,
        })
    }

    /// Adds layer `layer`'s attention probabilities `(batch, heads, tokens, tokens)`.
    pub fn accumulate(
        &self,
        acc: &mut ContactAccumulator,
        layer: usize,
        probs: &Tensor,
    ) -> Result<()> {
        let (_, _, t, _) = probs.dims4()?;
        let a = probs.to_dtype(DType::F32)?.broadcast_mul(&acc.pair_mask)?;
        let a = a.narrow(2, 1, t - 2)?.narrow(3, 1, t - 2)?;
        let sym = (&a + a.t()?)?;
        let a1 = sym.sum_keepdim(D::Minus1)?;
        let a2 = sym.sum_keepdim(D::Minus2)?;
        let a12 = a1.sum_keepdim(D::Minus2)?;
        // Guard against an all-zero map (a single residue): APC is then zero.
        let a12 = a12.maximum(f32::MIN_POSITIVE)?;
        let apc = (sym - a1.broadcast_mul(&a2)?.broadcast_div(&a12)?)?;
        let w = self
            .weight
            .narrow(1, layer * self.heads, self.heads)?
            .to_dtype(DType::F32)?
            .reshape((1, self.heads, 1, 1))?;
        let weighted = apc.broadcast_mul(&w)?.sum(1)?;
        acc.sum = Some(match acc.sum.take() {
            Some(s) => (s + weighted)?,
            None => weighted,
        });
        Ok(())
    }

    /// Contact probabilities `(batch, tokens-2, tokens-2)`.
    pub fn finish(&self, acc: ContactAccumulator) -> Result<Tensor> {
        let sum = acc
            .sum
            .ok_or_else(|| candle_core::Error::Msg("contact head saw no layers".into()))?;
        let bias = self.bias.to_dtype(DType::F32)?;
        candle_nn::ops::sigmoid(&sum.broadcast_add(&bias)?)
    }
}
