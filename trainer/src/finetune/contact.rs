//! Fits the contact head (`contact_head.regression`, a logistic regression over the
//! APC-corrected attention maps of every layer and head) to the native contacts of the
//! GraphPPIS training chains, leaving the transformer untouched.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use plm_model::checkpoint::{files, save_checkpoint};
use plm_model::esm::ForwardOptions;
use plm_model::{Checkpoint, EsmForMaskedLM};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use super::FinetuneArgs;
use crate::taskdata;

/// Minimum sequence separation of the pairs the regression is fitted on.
const MIN_SEPARATION: usize = 6;
/// Sequence separation of "long-range" contacts in the precision metric.
const LONG_RANGE: usize = 24;

struct Chain {
    sequence: String,
    contacts: Vec<(usize, usize)>,
}

fn chains(args: &FinetuneArgs, set: &str, limit: usize) -> Result<Vec<Chain>> {
    let dir = args.data.join("binding/graphppis");
    let labels = taskdata::read_residue_labels(&dir.join(format!("{set}.fa")))?;
    let contacts = taskdata::read_contacts(&dir.join(format!("{set}_contacts.tsv.gz")), 8.0)?;
    Ok(labels
        .into_iter()
        .filter(|p| p.sequence.len() <= limit)
        .filter_map(|p| {
            contacts.get(&p.id).map(|c| Chain {
                sequence: p.sequence.clone(),
                contacts: c.clone(),
            })
        })
        .collect())
}

fn contact_probabilities(
    model: &EsmForMaskedLM,
    ckpt: &Checkpoint,
    sequence: &str,
    device: &Device,
) -> Result<Tensor> {
    let ids = ckpt.tokenizer.encode(sequence)?;
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), device)?;
    let mask = Tensor::ones((1, n), DType::F32, device)?;
    let out = model.forward(
        &ids,
        &mask,
        &ForwardOptions {
            contacts: true,
            ..Default::default()
        },
    )?;
    Ok(out.contacts.context("no contact output")?.squeeze(0)?)
}

/// Mean precision of the top `L/5` long-range predictions over chains.
fn precision_at_l5(
    model: &EsmForMaskedLM,
    ckpt: &Checkpoint,
    chains: &[Chain],
    device: &Device,
) -> Result<f64> {
    let mut total = 0.0;
    for c in chains {
        let p = contact_probabilities(model, ckpt, &c.sequence, device)?.to_vec2::<f32>()?;
        let truth: std::collections::HashSet<(usize, usize)> = c.contacts.iter().copied().collect();
        let l = c.sequence.len();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (i, row) in p.iter().enumerate() {
            for (j, &v) in row.iter().enumerate().skip(i + LONG_RANGE) {
                pairs.push((v, i, j));
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let k = (l / 5).max(1).min(pairs.len().max(1));
        let hits = pairs
            .iter()
            .take(k)
            .filter(|(_, i, j)| truth.contains(&(*i, *j)))
            .count();
        total += hits as f64 / k as f64;
    }
    Ok(total / chains.len().max(1) as f64)
}

/// Fits the regression of the checkpoint in `dir` (rewritten in place) on `device`, where the
/// model computes its attention maps, and returns metrics.
pub fn run(args: &FinetuneArgs, dir: &Path, device: &Device) -> Result<serde_json::Value> {
    let ckpt = Checkpoint::open(dir)?;
    let weights_path = dir.join(files::WEIGHTS);
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&weights_path, device)
            .with_context(|| format!("reading {}", weights_path.display()))?;
    let prefix = if tensors.keys().any(|k| k.starts_with("esm.")) {
        "esm."
    } else {
        ""
    };
    let w_name = format!("{prefix}contact_head.regression.weight");
    let b_name = format!("{prefix}contact_head.regression.bias");
    let channels = ckpt.config.num_hidden_layers * ckpt.config.num_attention_heads;
    let w = Var::from_tensor(&match tensors.get(&w_name) {
        Some(t) => t.clone(),
        None => Tensor::zeros((1, channels), DType::F32, device)?,
    })?;
    let b = Var::from_tensor(&match tensors.get(&b_name) {
        Some(t) => t.clone(),
        None => Tensor::zeros(1, DType::F32, device)?,
    })?;
    tensors.insert(w_name.clone(), w.as_tensor().clone());
    tensors.insert(b_name.clone(), b.as_tensor().clone());
    let model = EsmForMaskedLM::load(
        VarBuilder::from_tensors(tensors.clone(), DType::F32, device),
        &ckpt.config,
    )?;
    let limit = ckpt.config.max_residues();
    let train = chains(args, "Train_335", limit)?;
    let test = chains(args, "Test_60", limit)?;
    let before = precision_at_l5(&model, &ckpt, &test, device)?;
    let mut optimizer = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: 0.02,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    for epoch in 1..=args.contact_epochs {
        order.shuffle(&mut rng);
        let mut total = 0.0;
        for &k in &order {
            let c = &train[k];
            let l = c.sequence.len();
            let probs = contact_probabilities(&model, &ckpt, &c.sequence, device)?
                .clamp(1e-6, 1.0 - 1e-6)?;
            let mut target = vec![0f32; l * l];
            let mut mask = vec![0f32; l * l];
            for i in 0..l {
                for j in i + MIN_SEPARATION..l {
                    mask[i * l + j] = 1.0;
                }
            }
            for &(i, j) in &c.contacts {
                if i < l && j < l {
                    target[i * l + j] = 1.0;
                }
            }
            let t = Tensor::from_vec(target, (l, l), device)?;
            let m = Tensor::from_vec(mask, (l, l), device)?;
            let bce = ((&t * probs.log()?)? + ((1.0 - &t)? * (1.0 - &probs)?.log()?)?)?.neg()?;
            let loss = ((bce * &m)?.sum_all()? / m.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64;
        }
        eprintln!(
            "contact head: epoch {epoch}: loss {:.4}",
            total / train.len().max(1) as f64
        );
    }
    let after = precision_at_l5(&model, &ckpt, &test, device)?;
    eprintln!("contact head: long-range P@L/5 on Test_60 {before:.3} -> {after:.3}");
    tensors.insert(w_name, w.as_tensor().detach());
    tensors.insert(b_name, b.as_tensor().detach());
    for t in tensors.values_mut() {
        *t = t.to_device(&Device::Cpu)?;
    }
    let mut manifest = ckpt.describe();
    let metrics = json!({
        "protocol": "logistic regression over APC-corrected attention maps fitted on GraphPPIS Train_335 native C-alpha contacts (< 8 Å, separation >= 6); long-range (separation >= 24) precision of the top L/5 pairs on Test_60",
        "train_chains": train.len(), "test_chains": test.len(),
        "precision_at_l5_long_range_before": before,
        "precision_at_l5_long_range_after": after,
    });
    if let serde_json::Value::Object(map) = &mut manifest.training {
        map.insert("contact_head".into(), metrics.clone());
    } else {
        manifest.training = json!({ "contact_head": metrics.clone() });
    }
    save_checkpoint(dir, &ckpt.config, &tensors, manifest)?;
    Ok(metrics)
}
