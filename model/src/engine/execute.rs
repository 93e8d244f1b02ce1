//! Execution of one batch: tokenise and pad, one forward pass, and each sequence's outputs cut
//! out of the batch's tensors.

use candle_core::{DType, Device, Tensor};

use crate::error::{PlmError, Result};
use crate::esm::{EsmForMaskedLM, ForwardOptions};
use crate::tokenizer::ProteinTokenizer;

/// What one pass over a set of sequences should compute.
#[derive(Debug, Clone, Default)]
pub(super) struct Request {
    /// Hidden states, by layer index, in the order the caller wants them.
    pub layers: Vec<usize>,
    /// Contact probabilities.
    pub contacts: bool,
    /// Masked-language-model logits.
    pub logits: bool,
}

/// Per-sequence outputs of one pass.
#[derive(Debug, Clone, Default)]
pub(super) struct SequenceOutput {
    /// Per requested layer: `(residues × hidden)`.
    pub residues: Vec<Vec<f32>>,
    /// Per requested layer: the `<cls>` vector.
    pub cls: Vec<Vec<f32>>,
    /// `(residues × residues)` contact probabilities.
    pub contacts: Option<Vec<f32>>,
    /// `(residues+2) × vocab` logits (not available for windowed sequences).
    pub logits: Option<Vec<f32>>,
}

/// One forward pass of `model` on `device` over `seqs` (cleaned, each within the model's
/// limit): the outputs `request` asks for, one per sequence in order.
pub(super) fn run_batch(
    model: &EsmForMaskedLM,
    tokenizer: &ProteinTokenizer,
    device: &Device,
    seqs: &[&str],
    request: &Request,
) -> Result<Vec<SequenceOutput>> {
    let pad = tokenizer.special().pad;
    let encoded = seqs
        .iter()
        .map(|s| tokenizer.encode_clean(s))
        .collect::<Result<Vec<_>>>()?;
    let t = encoded.iter().map(Vec::len).max().unwrap_or(2);
    let b = encoded.len();
    let mut ids = vec![pad; b * t];
    let mut mask = vec![0u32; b * t];
    for (row, e) in encoded.iter().enumerate() {
        ids[row * t..row * t + e.len()].copy_from_slice(e);
        mask[row * t..row * t + e.len()].fill(1);
    }
    let ids = Tensor::from_vec(ids, (b, t), device)?;
    let mask = Tensor::from_vec(mask, (b, t), device)?;
    let mut layers = request.layers.clone();
    layers.sort_unstable();
    layers.dedup();
    let out = model.forward(
        &ids,
        &mask,
        &ForwardOptions {
            layers,
            logits: request.logits,
            contacts: request.contacts,
        },
    )?;
    let config = model.config();
    let (h, vocab) = (config.hidden_size, config.vocab_size);
    let hidden: Vec<Vec<f32>> = request
        .layers
        .iter()
        .map(|l| {
            let tensor = out
                .layer(*l)
                .ok_or_else(|| PlmError::Internal(format!("layer {l} not computed")))?;
            to_host_vec(tensor)
        })
        .collect::<Result<_>>()?;
    let contacts = out.contacts.as_ref().map(to_host_vec).transpose()?;
    let logits = out.logits.as_ref().map(to_host_vec).transpose()?;
    let mut results = Vec::with_capacity(b);
    for (row, seq) in seqs.iter().enumerate() {
        let n = seq.len();
        let mut o = SequenceOutput::default();
        for data in &hidden {
            let base = row * t * h;
            o.cls.push(data[base..base + h].to_vec());
            o.residues.push(data[base + h..base + (n + 1) * h].to_vec());
        }
        if let Some(c) = &contacts {
            let tc = t - 2;
            let mut m = Vec::with_capacity(n * n);
            for i in 0..n {
                let start = row * tc * tc + i * tc;
                m.extend_from_slice(&c[start..start + n]);
            }
            o.contacts = Some(m);
        }
        if let Some(lg) = &logits {
            let base = row * t * vocab;
            o.logits = Some(lg[base..base + (n + 2) * vocab].to_vec());
        }
        results.push(o);
    }
    Ok(results)
}

/// Copies a tensor to host memory as a flat f32 vector.
fn to_host_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}
