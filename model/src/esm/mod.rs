//! ESM-2 (`EsmForMaskedLM` of Hugging Face `transformers`) in candle.
//!
//! Weights load by their Hugging Face names, with or without the `esm.` prefix, and with layer
//! norms stored either as `weight`/`bias` (hub checkpoints) or `gamma`/`beta` (`transformers` 5.x).

/// `$module::$tile::<R>(args)` with the const `R` equal to `$rows` (1 to 8, the register
/// tile heights of the low-precision kernels; anything else runs as 1 and is the caller's
/// assertion to rule out).
macro_rules! with_tile_rows {
    ($rows:expr, $module:ident :: $tile:ident ( $($arg:expr),* $(,)? )) => {
        match $rows {
            8 => $module::$tile::<8>($($arg),*),
            7 => $module::$tile::<7>($($arg),*),
            6 => $module::$tile::<6>($($arg),*),
            5 => $module::$tile::<5>($($arg),*),
            4 => $module::$tile::<4>($($arg),*),
            3 => $module::$tile::<3>($($arg),*),
            2 => $module::$tile::<2>($($arg),*),
            _ => $module::$tile::<1>($($arg),*),
        }
    };
}

mod attention;
mod bf16;
mod contact;
mod cpu;
mod embeddings;
mod fast;
#[cfg(target_arch = "x86_64")]
mod fused_attention;
mod int8;
mod kernels;
mod layer;
mod lm_head;
mod norm;
mod packed;
mod rotary;

pub use attention::SelfAttention;
pub use contact::ContactHead;
pub use embeddings::Embeddings;
pub use layer::EsmLayer;
pub use lm_head::LmHead;
pub use norm::{layer_norm, Norm};
pub use packed::cpu_kernel;
pub use rotary::RotaryEmbedding;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::EsmConfig;

/// What one forward pass should return besides the final hidden state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// Hidden states to return, by layer index: 0 is the embedding output, `k` the output of
    /// block `k`, and `num_hidden_layers` the final, layer-normalised representation (the
    /// convention of `fair-esm`'s `repr_layers`).
    pub layers: Vec<usize>,
    /// Return masked-language-model logits.
    pub logits: bool,
    /// Return contact probabilities (`(batch, tokens-2, tokens-2)`, `<cls>`/`<eos>` removed).
    pub contacts: bool,
}

/// Outputs of [`EsmForMaskedLM::forward`].
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// `(layer, (batch, tokens, hidden))` for every requested layer, in the order asked.
    pub hidden: Vec<(usize, Tensor)>,
    /// `(batch, tokens, vocab)` when asked for.
    pub logits: Option<Tensor>,
    /// `(batch, tokens-2, tokens-2)` when asked for.
    pub contacts: Option<Tensor>,
}

impl ForwardOutput {
    /// The hidden state of `layer`, if it was requested.
    pub fn layer(&self, layer: usize) -> Option<&Tensor> {
        self.hidden
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, t)| t)
    }
}

/// ESM-2 with its masked-language-model head and contact head.
#[derive(Debug, Clone)]
pub struct EsmForMaskedLM {
    embeddings: Embeddings,
    layers: Vec<EsmLayer>,
    final_norm: Norm,
    rotary: RotaryEmbedding,
    lm_head: Option<LmHead>,
    contact_head: Option<ContactHead>,
    config: EsmConfig,
    /// The CPU inference variant, built at load when the weights allow it ([`cpu`]).
    cpu: Option<std::sync::Arc<cpu::CpuEsm>>,
}

impl EsmForMaskedLM {
    /// Loads the model from a var builder rooted at the checkpoint (names with or without `esm.`).
    ///
    /// The LM head and contact head are optional in the weights (a bare `EsmModel` loads
    /// without them); when training from a `VarMap` both are created.
    pub fn load(vb: VarBuilder, config: &EsmConfig) -> Result<Self> {
        // A var builder with no weights yet (training from scratch) creates every head.
        let is_fresh = !vb.contains_tensor("esm.embeddings.word_embeddings.weight")
            && !vb.contains_tensor("embeddings.word_embeddings.weight");
        let base = if vb.contains_tensor("esm.embeddings.word_embeddings.weight")
            || !vb.contains_tensor("embeddings.word_embeddings.weight")
        {
            vb.pp("esm")
        } else {
            vb.clone()
        };
        let embeddings = Embeddings::load(base.pp("embeddings"), config)?;
        let encoder = base.pp("encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|i| EsmLayer::load(encoder.pp(format!("layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = layer_norm(
            config.hidden_size,
            config.layer_norm_eps,
            encoder.pp("emb_layer_norm_after"),
        )?;
        let rotary = RotaryEmbedding::new(
            config.head_dim(),
            config.max_position_embeddings,
            vb.device(),
        )?;
        let lm_head = if is_fresh || vb.contains_tensor("lm_head.dense.weight") {
            Some(LmHead::load(
                vb.pp("lm_head"),
                config,
                embeddings.word_weight(),
            )?)
        } else {
            None
        };
        let contact_head = if is_fresh || base.contains_tensor("contact_head.regression.weight") {
            Some(ContactHead::load(base.pp("contact_head"), config)?)
        } else {
            None
        };
        let mut model = Self {
            embeddings,
            layers,
            final_norm,
            rotary,
            lm_head,
            contact_head,
            config: config.clone(),
            cpu: None,
        };
        model.cpu = cpu::CpuEsm::build(&model, None).map(std::sync::Arc::new);
        Ok(model)
    }

    /// Makes this a model at `precision` ([`crate::checkpoint::Precision`]): the projections
    /// of every block take their int8 (per output channel) or bf16 values, so every path
    /// computes with the same weights, and the CPU variant runs them as int8 products with
    /// activations quantised per token, or as bf16 products with f32 sums. A no-op for f32;
    /// fails for trainable weights.
    pub fn quantize(&mut self, precision: crate::Precision) -> Result<()> {
        if precision.is_f32() {
            return Ok(());
        }
        let blocks = self
            .layers
            .iter_mut()
            .map(|l| {
                l.quantize(precision)?.ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "trainable weights cannot be made {}",
                        precision.as_str()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.cpu = cpu::CpuEsm::build(self, Some(blocks)).map(std::sync::Arc::new);
        Ok(())
    }

    /// The model's configuration.
    pub fn config(&self) -> &EsmConfig {
        &self.config
    }

    /// Whether the checkpoint has an LM head (logits available).
    pub fn has_lm_head(&self) -> bool {
        self.lm_head.is_some()
    }

    /// Whether the checkpoint has a contact head.
    pub fn has_contact_head(&self) -> bool {
        self.contact_head.is_some()
    }

    /// Runs the model on `input_ids` `(batch, tokens)` (u32) with `attention_mask` `(batch,
    /// tokens)` (1 for real tokens, 0 for padding), returning what `options` asks for.
    ///
    /// Blocks after the deepest requested layer are skipped when neither logits nor contacts
    /// are needed.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        let num_layers = self.layers.len();
        if let Some(bad) = options.layers.iter().find(|l| **l > num_layers) {
            candle_core::bail!("layer {bad} out of range 0..={num_layers}");
        }
        if options.logits && self.lm_head.is_none() {
            candle_core::bail!("this checkpoint has no LM head");
        }
        let contact_head = match (options.contacts, &self.contact_head) {
            (true, Some(head)) => Some(head),
            (true, None) => candle_core::bail!("this checkpoint has no contact head"),
            _ => None,
        };
        if let (None, Some(cpu)) = (contact_head, &self.cpu) {
            return cpu.forward(self, input_ids, attention_mask, options);
        }
        let (_, seq_len) = input_ids.dims2()?;
        let mask_f = attention_mask.to_dtype(DType::F32)?;
        let padded = mask_f.min_all()?.to_scalar::<f32>()? < 0.5;
        // Additive bias (batch, 1, 1, tokens): 0 for real tokens, a very large negative for padding.
        let bias = if padded {
            let neg = ((mask_f.ones_like()? - &mask_f)? * f64::from(f32::MIN))?;
            Some(
                neg.unsqueeze(1)?
                    .unsqueeze(1)?
                    .to_dtype(self.embeddings.dtype())?,
            )
        } else {
            None
        };
        let (cos, sin) = self.rotary.cos_sin(seq_len)?;
        let last_needed = if options.logits || options.contacts {
            num_layers
        } else {
            options.layers.iter().copied().max().unwrap_or(num_layers)
        };

        let mut contact_acc = match contact_head {
            Some(head) => Some(head.accumulator(input_ids, &mask_f)?),
            None => None,
        };
        let mut hidden = Vec::with_capacity(options.layers.len());
        let mut xs = self.embeddings.forward(input_ids, &mask_f, &self.config)?;
        let keep = |idx: usize, t: &Tensor, hidden: &mut Vec<(usize, Tensor)>| {
            if idx < num_layers && options.layers.contains(&idx) {
                hidden.push((idx, t.clone()));
            }
        };
        keep(0, &xs, &mut hidden);
        for (i, layer) in self.layers.iter().enumerate().take(last_needed) {
            let (out, probs) =
                layer.forward(&xs, bias.as_ref(), &cos, &sin, contact_acc.is_some())?;
            if let (Some(acc), Some(head), Some(probs)) =
                (contact_acc.as_mut(), contact_head, probs)
            {
                head.accumulate(acc, i, &probs)?;
            }
            xs = out;
            keep(i + 1, &xs, &mut hidden);
        }
        let want_final = options.layers.contains(&num_layers) || options.logits;
        let final_hidden = if want_final && last_needed == num_layers {
            Some(self.final_norm.forward(&xs)?)
        } else {
            None
        };
        let contacts = match (contact_acc, contact_head) {
            (Some(acc), Some(head)) => Some(head.finish(acc)?),
            _ => None,
        };
        self.assemble_output(options, hidden, final_hidden, contacts)
    }

    /// The outputs of a pass: the hidden states in the order asked (the final, normalised one
    /// included when asked), logits from the final hidden state when asked, and `contacts`.
    fn assemble_output(
        &self,
        options: &ForwardOptions,
        mut hidden: Vec<(usize, Tensor)>,
        final_hidden: Option<Tensor>,
        contacts: Option<Tensor>,
    ) -> Result<ForwardOutput> {
        let num_layers = self.layers.len();
        if let Some(fh) = &final_hidden {
            if options.layers.contains(&num_layers) {
                hidden.push((num_layers, fh.clone()));
            }
        }
        let mut ordered = Vec::with_capacity(options.layers.len());
        for l in &options.layers {
            if let Some((_, t)) = hidden.iter().find(|(k, _)| k == l) {
                ordered.push((*l, t.clone()));
            }
        }
        let logits = match (options.logits, &self.lm_head, &final_hidden) {
            (true, Some(head), Some(fh)) => Some(head.forward(fh)?),
            _ => None,
        };
        Ok(ForwardOutput {
            hidden: ordered,
            logits,
            contacts,
        })
    }

    /// Whether passes without contacts run on the CPU variant (`cpu`), chosen at load.
    pub fn has_cpu_variant(&self) -> bool {
        self.cpu.is_some()
    }

    /// Masked-language-model logits `(batch, tokens, vocab)` and the final hidden state.
    pub fn forward_mlm(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = self.layers.len();
        let out = self.forward(
            input_ids,
            attention_mask,
            &ForwardOptions {
                layers: vec![n],
                logits: true,
                contacts: false,
            },
        )?;
        let logits = out
            .logits
            .ok_or_else(|| candle_core::Error::Msg("no logits".into()))?;
        let hidden = out
            .hidden
            .into_iter()
            .next()
            .map(|(_, t)| t)
            .ok_or_else(|| candle_core::Error::Msg("no hidden".into()))?;
        Ok((logits, hidden))
    }

    /// Log-softmax over the vocabulary, for perplexity.
    pub fn log_probs(logits: &Tensor) -> Result<Tensor> {
        candle_nn::ops::log_softmax(logits, D::Minus1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The packed CPU path against the tensor path (taken when contacts are asked for) on a
    /// padded batch with a hole in one mask: every hidden state and the logits, real positions.
    #[test]
    fn fast_path_matches_tensor_path() {
        let dir = std::path::Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("tests/fixtures/esm_tiny");
        let ckpt = crate::checkpoint::Checkpoint::open(&dir).unwrap();
        let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
        assert!(model.has_cpu_variant());
        let n = model.config().num_hidden_layers;
        let (b, t) = (3, 40);
        let mut ids: Vec<u32> = (0..b * t).map(|i| 4 + (i * 7 % 20) as u32).collect();
        ids[5] = model.config().mask_token_id; // token dropout rescales row 0
        ids[t + 7] = model.config().mask_token_id;
        let mut mask = vec![1u32; b * t];
        mask[t + 25..2 * t].fill(0); // row 1: 25 tokens then padding
        mask[2 * t + 3] = 0; // row 2: a hole
        mask[2 * t + 30..3 * t].fill(0);
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
        let mask_t = Tensor::from_vec(mask.clone(), (b, t), &Device::Cpu).unwrap();
        let layers: Vec<usize> = (0..=n).collect();
        let run = |contacts| {
            model
                .forward(
                    &ids,
                    &mask_t,
                    &ForwardOptions {
                        layers: layers.clone(),
                        logits: true,
                        contacts,
                    },
                )
                .unwrap()
        };
        let (slow, fast) = (run(true), run(false));
        let real = |x: &Tensor| -> Vec<f32> {
            let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let w = v.len() / (b * t);
            v.chunks(w)
                .zip(&mask)
                .filter(|(_, m)| **m != 0)
                .flat_map(|(r, _)| r.to_vec())
                .collect()
        };
        let mut pairs: Vec<(String, &Tensor, &Tensor)> = layers
            .iter()
            .map(|&l| {
                (
                    format!("hidden{l}"),
                    slow.layer(l).unwrap(),
                    fast.layer(l).unwrap(),
                )
            })
            .collect();
        pairs.push((
            "logits".into(),
            slow.logits.as_ref().unwrap(),
            fast.logits.as_ref().unwrap(),
        ));
        for (what, s, f) in pairs {
            assert_eq!(s.dims(), f.dims(), "{what}");
            let d = real(s)
                .iter()
                .zip(real(f))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(d <= 1e-5, "{what}: {d}");
        }
    }
}
