//! The interaction head: D-SCRIPT yeast pairs with a split where test proteins never occur in
//! training, 5-fold cross-validation on the Guo yeast set, and cross-species transfer to the
//! human and fly pairs.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use plm_model::heads::{sigmoid, PpiHead, PpiHeadConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;

use super::features::{composition, FeatureExtractor};
use super::train::{bce_with_logits, train_head, HeadTraining};
use super::{rows_tensor, split_validation, FinetuneArgs, TaskOutput};
use crate::metrics::{aupr, auroc, Confusion};
use crate::taskdata;

/// Pairs as indices into a feature table.
pub type Pairs = Vec<(usize, usize, bool)>;

fn fit(
    what: &str,
    x: &[Vec<f32>],
    pairs: &Pairs,
    config: &PpiHeadConfig,
    training: &HeadTraining,
    seed: u64,
) -> Result<(VarMap, PpiHead)> {
    let varmap = VarMap::new();
    let head = PpiHead::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        config,
    )?;
    let (train, val) = split_validation(pairs.len(), 0.1, seed);
    let val_pairs: Pairs = val.iter().map(|&i| pairs[i]).collect();
    train_head(
        what,
        &varmap,
        training,
        train.len(),
        |batch| {
            let chosen: Vec<(usize, usize, bool)> =
                batch.iter().map(|&b| pairs[train[b]]).collect();
            let a: Vec<usize> = chosen.iter().map(|p| p.0).collect();
            let b: Vec<usize> = chosen.iter().map(|p| p.1).collect();
            let t: Vec<f32> = chosen.iter().map(|p| p.2 as u8 as f32).collect();
            let logits = head.forward(&rows_tensor(x, &a)?, &rows_tensor(x, &b)?, true)?;
            bce_with_logits(
                &logits,
                &Tensor::from_vec(t, chosen.len(), &Device::Cpu)?,
                None,
            )
        },
        || {
            let s = score(&head, x, &val_pairs)?;
            let l: Vec<bool> = val_pairs.iter().map(|p| p.2).collect();
            Ok(aupr(&s, &l).unwrap_or(0.0))
        },
    )?;
    Ok((varmap, head))
}

fn score(head: &PpiHead, x: &[Vec<f32>], pairs: &Pairs) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(512) {
        let a: Vec<usize> = chunk.iter().map(|p| p.0).collect();
        let b: Vec<usize> = chunk.iter().map(|p| p.1).collect();
        out.extend(sigmoid(
            &head
                .forward(&rows_tensor(x, &a)?, &rows_tensor(x, &b)?, false)?
                .to_vec1::<f32>()?,
        ));
    }
    Ok(out)
}

fn evaluate(head: &PpiHead, x: &[Vec<f32>], pairs: &Pairs) -> Result<serde_json::Value> {
    let s = score(head, x, pairs)?;
    let l: Vec<bool> = pairs.iter().map(|p| p.2).collect();
    Ok(json!({
        "pairs": pairs.len(),
        "positives": l.iter().filter(|&&v| v).count(),
        "aupr": aupr(&s, &l),
        "auroc": auroc(&s, &l),
        "accuracy": Confusion::new(&s, &l, 0.5).accuracy(),
    }))
}

/// D-SCRIPT's yeast interaction set and how the interaction head splits it: proteins, not
/// pairs, are split (the first fifth, shuffled with the seed, held out), so test pairs have both
/// proteins unseen in training.
pub struct YeastSplit {
    /// Protein identifiers.
    pub ids: Vec<String>,
    /// Their sequences.
    pub sequences: Vec<String>,
    /// Pairs of protein indices and whether they interact.
    pub pairs: Pairs,
    /// Proteins held out from training.
    pub held_out: HashSet<usize>,
}

impl YeastSplit {
    /// Reads `ppi/dscript_yeast*` of the shared data directory `data` and splits with `seed`.
    pub fn read(data: &Path, seed: u64) -> Result<Self> {
        let dir = data.join("ppi");
        let sequences = first_word(taskdata::read_sequences(&dir.join("dscript_yeast.fasta"))?);
        let pairs = taskdata::read_pairs(&dir.join("dscript_yeast_pairs.tsv"))?;
        let (ids, sequences, pairs) = indexed(&pairs, &sequences)?;
        let mut proteins: Vec<usize> = (0..ids.len()).collect();
        proteins.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let held_out = proteins[..ids.len() / 5].iter().copied().collect();
        Ok(Self {
            ids,
            sequences,
            pairs,
            held_out,
        })
    }

    /// Whether neither protein of the pair is held out (it may train the head).
    pub fn trains(&self, &(a, b, _): &(usize, usize, bool)) -> bool {
        !self.held_out.contains(&a) && !self.held_out.contains(&b)
    }

    /// Whether both proteins of the pair are held out.
    pub fn unseen(&self, &(a, b, _): &(usize, usize, bool)) -> bool {
        self.held_out.contains(&a) && self.held_out.contains(&b)
    }
}

/// Sequences and index-pairs of a pair file, dropping pairs whose sequences are missing.
pub fn indexed(
    pairs: &[(String, String, bool)],
    sequences: &HashMap<String, String>,
) -> Result<(Vec<String>, Vec<String>, Pairs)> {
    let mut ids: Vec<String> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut dropped = 0usize;
    for (a, b, l) in pairs {
        let (Some(_), Some(_)) = (sequences.get(a), sequences.get(b)) else {
            dropped += 1;
            continue;
        };
        let mut idx = |id: &String| -> usize {
            *position.entry(id.clone()).or_insert_with(|| {
                ids.push(id.clone());
                ids.len() - 1
            })
        };
        let (ia, ib) = (idx(a), idx(b));
        out.push((ia, ib, *l));
    }
    if out.is_empty() {
        bail!("no pair has both sequences");
    }
    if dropped > 0 {
        eprintln!(
            "warning: dropped {dropped} of {} pairs whose sequence is missing",
            pairs.len()
        );
    }
    let seqs = ids.iter().map(|id| sequences[id].clone()).collect();
    Ok((ids, seqs, out))
}

/// The map with each identifier cut at its first whitespace (FASTA header words).
pub fn first_word(map: HashMap<String, String>) -> HashMap<String, String> {
    map.into_iter()
        .map(|(k, v)| {
            (
                k.split_whitespace().next().unwrap_or_default().to_string(),
                v,
            )
        })
        .collect()
}

/// Trains the interaction head on D-SCRIPT yeast and evaluates it.
pub fn run(args: &FinetuneArgs, fx: &FeatureExtractor) -> Result<TaskOutput> {
    let dir = args.data.join("ppi");
    let training = args.head_training();
    let yeast = YeastSplit::read(&args.data, args.seed)?;
    let (seqs, pairs) = (&yeast.sequences, &yeast.pairs);
    let train_pairs: Pairs = pairs.iter().copied().filter(|p| yeast.trains(p)).collect();
    let test_pairs: Pairs = pairs.iter().copied().filter(|p| yeast.unseen(p)).collect();
    let x = fx.pooled("D-SCRIPT yeast features", seqs)?;
    let config = PpiHeadConfig {
        input_dim: x[0].len(),
        hidden: args.hidden,
        dropout: 0.2,
    };
    let (varmap, head) = fit("PPI head", &x, &train_pairs, &config, &training, args.seed)?;
    let dscript = evaluate(&head, &x, &test_pairs)?;

    let comp: Vec<Vec<f32>> = seqs.iter().map(|s| composition(s)).collect();
    let (_, comp_head) = fit(
        "PPI composition",
        &comp,
        &train_pairs,
        &PpiHeadConfig {
            input_dim: comp[0].len(),
            ..config.clone()
        },
        &training,
        args.seed,
    )?;
    let dscript_comp = evaluate(&comp_head, &comp, &test_pairs)?;

    // Cross-species: the yeast-trained head on human and fly pairs.
    let mut cross = serde_json::Map::new();
    for species in ["human", "fly"] {
        let s = first_word(taskdata::read_sequences(
            &dir.join(format!("mcaps_{species}.fasta")),
        )?);
        let p = taskdata::seeded_subset(
            &taskdata::read_pairs(&dir.join(format!("mcaps_{species}_pairs.tsv")))?,
            args.cross_species_pairs,
            args.seed,
        );
        let (_, sq, ip) = indexed(&p, &s)?;
        let xs = fx.pooled(&format!("{species} features"), &sq)?;
        cross.insert(species.to_string(), evaluate(&head, &xs, &ip)?);
    }

    // Guo yeast: 5-fold cross-validation over pairs, as PIPR reports.
    let guo_seqs = taskdata::read_sequences(&dir.join("guo_yeast_sequences.tsv"))?;
    let (_, gseqs, gpairs) = indexed(
        &taskdata::seeded_subset(
            &taskdata::read_pairs(&dir.join("guo_yeast_pairs.tsv"))?,
            args.guo_pairs,
            args.seed,
        ),
        &guo_seqs,
    )?;
    let gx = fx.pooled("Guo yeast features", &gseqs)?;
    let mut order: Vec<usize> = (0..gpairs.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let mut accuracies = Vec::new();
    for fold in 0..5 {
        let held: HashSet<usize> = order
            .iter()
            .enumerate()
            .filter(|(k, _)| k % 5 == fold)
            .map(|(_, &i)| i)
            .collect();
        let tr: Pairs = (0..gpairs.len())
            .filter(|i| !held.contains(i))
            .map(|i| gpairs[i])
            .collect();
        let te: Pairs = (0..gpairs.len())
            .filter(|i| held.contains(i))
            .map(|i| gpairs[i])
            .collect();
        let (_, h) = fit(
            &format!("Guo fold {}", fold + 1),
            &gx,
            &tr,
            &config,
            &training,
            args.seed + fold as u64,
        )?;
        let s = score(&h, &gx, &te)?;
        let l: Vec<bool> = te.iter().map(|p| p.2).collect();
        accuracies.push(Confusion::new(&s, &l, 0.5).accuracy());
    }
    let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
    let metrics = json!({
        "dscript_yeast": {
            "protocol": format!("proteins split 80/20 (seed {}); training pairs have both proteins in the training part, test pairs both in the test part; 10% of training pairs for early stopping", args.seed),
            "train_pairs": train_pairs.len(),
            "lm_mlp": dscript,
            "composition_mlp": dscript_comp,
        },
        "cross_species_from_yeast": cross,
        "guo_yeast_5fold": {"accuracy_mean": mean, "fold_accuracy": accuracies, "pairs": gpairs.len()},
    });
    Ok(TaskOutput::ppi(config, varmap, metrics))
}
