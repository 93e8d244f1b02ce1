//! Function heads: EC numbers (CLEAN's NEW-392 protocol) and GO terms (protein-centric Fmax on a
//! sequence-identity split), each against two baselines: nearest-neighbour label transfer over
//! the same embeddings and an MLP over amino-acid composition.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use plm_model::heads::{propagate_up, sigmoid, FunctionHead, FunctionHeadConfig, TermVocabulary};
use plm_model::neighbours::{self, NeighbourHeadConfig, ProjectionConfig};
use serde_json::json;

use super::contrastive;
use super::features::{composition, FeatureExtractor};
use super::train::{bce_with_logits, train_head, HeadTraining};
use super::{rows_tensor, split_validation, FinetuneArgs, TaskOutput};
use crate::metrics::{fmax, weighted_prf};
use crate::taskdata::{self, GoGraph, LabeledProtein};

/// A trained multi-label MLP.
struct Fitted {
    varmap: VarMap,
    head: FunctionHead,
}

fn fit(
    what: &str,
    x: &[Vec<f32>],
    y: &[Vec<usize>],
    val: &[usize],
    train: &[usize],
    config: &FunctionHeadConfig,
    training: &HeadTraining,
) -> Result<Fitted> {
    let varmap = VarMap::new();
    let head = FunctionHead::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        config,
    )?;
    let n_labels = config.terms.labels.len();
    let targets = |idx: &[usize]| -> Result<Tensor> {
        let mut t = vec![0f32; idx.len() * n_labels];
        for (r, &i) in idx.iter().enumerate() {
            for &l in &y[i] {
                t[r * n_labels + l] = 1.0;
            }
        }
        Ok(Tensor::from_vec(t, (idx.len(), n_labels), &Device::Cpu)?)
    };
    let truth: Vec<HashSet<usize>> = val
        .iter()
        .map(|&i| y[i].iter().copied().collect())
        .collect();
    let report = train_head(
        what,
        &varmap,
        training,
        train.len(),
        |batch| {
            let idx: Vec<usize> = batch.iter().map(|&b| train[b]).collect();
            let logits = head.forward(&rows_tensor(x, &idx)?, true)?;
            bce_with_logits(&logits, &targets(&idx)?, None)
        },
        || {
            let scores = predict(&head, x, val, &[])?;
            Ok(fmax(&truth, &scores).0)
        },
    )?;
    eprintln!(
        "{what}: kept epoch {} (validation Fmax {:.3})",
        report.best_epoch, report.best_validation
    );
    Ok(Fitted { varmap, head })
}

fn predict(
    head: &FunctionHead,
    x: &[Vec<f32>],
    idx: &[usize],
    ancestors: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(256) {
        let logits = head
            .forward(&rows_tensor(x, chunk)?, false)?
            .to_vec2::<f32>()?;
        for row in logits {
            let mut s = sigmoid(&row);
            propagate_up(&mut s, ancestors);
            out.push(s);
        }
    }
    Ok(out)
}

/// Position of each label in the head's output.
fn label_index(labels: &[String]) -> HashMap<&str, usize> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect()
}

/// A bank row as deployed: unit length, stored as f16.
fn bank_row(v: &[f32]) -> Vec<f32> {
    let mut row: Vec<f32> = v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    neighbours::normalise(&mut row);
    row
}

/// Nearest-neighbour label transfer over a bank of the `train` proteins (as deployed: f16,
/// unit rows), scored as in [`neighbours::label_scores`].
fn knn_scores(
    x: &[Vec<f32>],
    y: &[Vec<usize>],
    train: &[usize],
    query: &[usize],
    n_labels: usize,
    k: usize,
) -> Vec<Vec<f32>> {
    let dim = x[0].len();
    let bank: Vec<f32> = train.iter().flat_map(|&i| bank_row(&x[i])).collect();
    let entry_labels = entry_labels(y, train);
    query
        .iter()
        .map(|&q| {
            let mut v = x[q].clone();
            neighbours::normalise(&mut v);
            neighbours::label_scores(&bank, dim, &entry_labels, &v, n_labels, k)
        })
        .collect()
}

fn entry_labels(y: &[Vec<usize>], entries: &[usize]) -> Vec<Vec<u32>> {
    entries
        .iter()
        .map(|&i| y[i].iter().map(|&l| l as u32).collect())
        .collect()
}

/// A deployable neighbour head over `entries`.
struct Neighbours {
    config: NeighbourHeadConfig,
    /// The f16 bank, `entries × bank_dim`.
    bank: Tensor,
    /// The projection's variables (empty without one).
    varmap: VarMap,
}

/// The neighbour head over `entries` whose bank rows are `rows` (the features, or their
/// projection when `projection` is given).
fn neighbour_head(
    config: &FunctionHeadConfig,
    rows: &[Vec<f32>],
    y: &[Vec<usize>],
    entries: &[usize],
    k: usize,
    projection: Option<(ProjectionConfig, VarMap)>,
) -> Result<Neighbours> {
    let dim = rows[0].len();
    let flat: Vec<half::f16> = entries
        .iter()
        .flat_map(|&i| rows[i].iter().map(|&v| half::f16::from_f32(v)))
        .collect();
    let bank = Tensor::from_vec(flat, (entries.len(), dim), &Device::Cpu)?;
    let (projection, varmap) = match projection {
        Some((c, v)) => (Some(c), v),
        None => (None, VarMap::new()),
    };
    let config = NeighbourHeadConfig {
        input_dim: config.input_dim,
        k,
        terms: config.terms.clone(),
        entry_labels: entry_labels(y, entries),
        projection,
    };
    Ok(Neighbours {
        config,
        bank,
        varmap,
    })
}

/// The head to deploy for an ontology, chosen by the validation metric (ties: the MLP).
fn choose(
    name: &str,
    mlp: (FunctionHeadConfig, VarMap),
    neighbours: Neighbours,
    val_mlp: f64,
    val_knn: f64,
    mut metrics: serde_json::Value,
) -> TaskOutput {
    let bank = if neighbours.config.projection.is_some() {
        "contrastive_nearest_neighbour"
    } else {
        "nearest_neighbour"
    };
    let chosen = if val_knn > val_mlp { bank } else { "mlp" };
    metrics["deployed"] = json!({
        "head": chosen,
        "validation": {"mlp": val_mlp, bank: val_knn},
        "rule": "the head with the better validation metric is deployed",
    });
    println!(
        "{name}: deploying the {chosen} head (validation: MLP {val_mlp:.3}, {} {val_knn:.3})",
        bank.replace('_', " ")
    );
    if chosen == "mlp" {
        TaskOutput::function(name, mlp.0, mlp.1, metrics)
    } else {
        TaskOutput::neighbours(
            name,
            neighbours.config,
            neighbours.bank,
            neighbours.varmap,
            metrics,
        )
    }
}

/// Predicted label sets: labels at or above `threshold`, and at least the best one.
fn label_sets(scores: &[Vec<f32>], labels: &[String], threshold: f32) -> Vec<HashSet<String>> {
    scores
        .iter()
        .map(|s| {
            let mut set: HashSet<String> = (0..s.len())
                .filter(|&k| s[k] >= threshold)
                .map(|k| labels[k].clone())
                .collect();
            if set.is_empty() {
                if let Some(best) = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])) {
                    set.insert(labels[best].clone());
                }
            }
            set
        })
        .collect()
}

fn best_threshold(scores: &[Vec<f32>], truth: &[HashSet<String>], labels: &[String]) -> f32 {
    (1..20)
        .map(|t| t as f32 / 20.0)
        .max_by(|&a, &b| {
            let fa = weighted_prf(truth, &label_sets(scores, labels, a)).2;
            let fb = weighted_prf(truth, &label_sets(scores, labels, b)).2;
            fa.total_cmp(&fb)
        })
        .unwrap_or(0.5)
}

/// Trains and evaluates the EC head.
pub fn run_ec(args: &FinetuneArgs, fx: &FeatureExtractor) -> Result<TaskOutput> {
    let dir = args.data.join("function/ec");
    let train_set = taskdata::read_ec(&dir.join("train.tsv"))?;
    let test_set = taskdata::read_ec(&dir.join("test_new392.tsv"))?;
    let labels: Vec<String> = train_set
        .iter()
        .flat_map(|p| p.labels.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = label_index(&labels);
    let all: Vec<&LabeledProtein> = train_set.iter().chain(&test_set).collect();
    let sequences: Vec<String> = all.iter().map(|p| p.sequence.clone()).collect();
    let x = fx.pooled("EC features", &sequences)?;
    let y: Vec<Vec<usize>> = all
        .iter()
        .map(|p| {
            p.labels
                .iter()
                .filter_map(|l| index.get(l.as_str()).copied())
                .collect()
        })
        .collect();
    let n_train = train_set.len();
    let (train, val) = split_validation(n_train, 0.1, args.seed);
    let test: Vec<usize> = (n_train..all.len()).collect();
    let truth = |idx: &[usize]| -> Vec<HashSet<String>> {
        idx.iter()
            .map(|&i| all[i].labels.iter().cloned().collect())
            .collect()
    };
    let config = FunctionHeadConfig {
        input_dim: x[0].len(),
        hidden: args.hidden,
        dropout: 0.2,
        terms: TermVocabulary {
            labels: labels.clone(),
            names: vec![String::new(); labels.len()],
            ancestors: vec![],
        },
    };
    let training = args.head_training();
    let fitted = fit("EC head", &x, &y, &val, &train, &config, &training)?;
    let val_mlp = predict(&fitted.head, &x, &val, &[])?;
    let threshold = best_threshold(&val_mlp, &truth(&val), &labels);
    let (p, r, f) = weighted_prf(
        &truth(&test),
        &label_sets(&predict(&fitted.head, &x, &test, &[])?, &labels, threshold),
    );

    let val_f1_mlp = weighted_prf(&truth(&val), &label_sets(&val_mlp, &labels, threshold)).2;
    let knn_val = knn_scores(&x, &y, &train, &val, labels.len(), 1);
    let knn_threshold = best_threshold(&knn_val, &truth(&val), &labels);
    let val_f1_knn = weighted_prf(&truth(&val), &label_sets(&knn_val, &labels, knn_threshold)).2;
    // Deployed bank: the training split, as validated (the threshold and the choice of head
    // were made with it) and as tested here.
    let knn_test = knn_scores(&x, &y, &train, &test, labels.len(), 1);
    let (kp, kr, kf) = weighted_prf(
        &truth(&test),
        &label_sets(&knn_test, &labels, knn_threshold),
    );

    // CLEAN's recipe: a supervised contrastive projection of the same features, searched the
    // same way (k = 1, threshold on validation); deployed only if validation says so.
    let projection_config = ProjectionConfig {
        hidden: 512,
        output: 128,
    };
    let val_truth = truth(&val);
    let labelled: Vec<usize> = (0..n_train).collect();
    let projected_f1 = |px: &[Vec<f32>]| -> (f64, f32) {
        let scores = knn_scores(px, &y, &train, &val, labels.len(), 1);
        let t = best_threshold(&scores, &val_truth, &labels);
        (
            weighted_prf(&val_truth, &label_sets(&scores, &labels, t)).2,
            t,
        )
    };
    let contrastive = contrastive::fit(
        "EC contrastive projection",
        &x,
        &y,
        &train,
        &projection_config,
        &training,
        |p| Ok(projected_f1(&contrastive::project(p, &x, &labelled)?).0),
    )?;
    let everything: Vec<usize> = (0..all.len()).collect();
    let px = contrastive::project(&contrastive.projection, &x, &everything)?;
    let (val_f1_cknn, cknn_threshold) = projected_f1(&px);
    let (qp, qr, qf) = weighted_prf(
        &truth(&test),
        &label_sets(
            &knn_scores(&px, &y, &train, &test, labels.len(), 1),
            &labels,
            cknn_threshold,
        ),
    );

    let comp: Vec<Vec<f32>> = sequences.iter().map(|s| composition(s)).collect();
    let comp_config = FunctionHeadConfig {
        input_dim: comp[0].len(),
        ..config.clone()
    };
    let comp_fit = fit(
        "EC composition baseline",
        &comp,
        &y,
        &val,
        &train,
        &comp_config,
        &training,
    )?;
    let ct = best_threshold(
        &predict(&comp_fit.head, &comp, &val, &[])?,
        &truth(&val),
        &labels,
    );
    let (cp, cr, cf) = weighted_prf(
        &truth(&test),
        &label_sets(&predict(&comp_fit.head, &comp, &test, &[])?, &labels, ct),
    );

    let metrics = json!({
        "protocol": "train on function/ec/train.tsv (10% held out for early stopping and the threshold), test on NEW-392; label-weighted precision/recall/F1 as CLEAN reports",
        "test_proteins": test.len(),
        "labels": labels.len(),
        "threshold": threshold,
        "mlp": {"precision": p, "recall": r, "f1": f},
        "nearest_neighbour": {"precision": kp, "recall": kr, "f1": kf, "threshold": knn_threshold, "k": 1},
        "contrastive_nearest_neighbour": {
            "precision": qp, "recall": qr, "f1": qf, "threshold": cknn_threshold, "k": 1,
            "projection": projection_config, "temperature": contrastive::TEMPERATURE,
            "training": contrastive.report,
        },
        "composition_mlp": {"precision": cp, "recall": cr, "f1": cf},
        "validation_f1": {"mlp": val_f1_mlp, "nearest_neighbour": val_f1_knn, "contrastive_nearest_neighbour": val_f1_cknn},
    });
    // One neighbour bank competes with the MLP: the projected one if it validated better.
    let (bank, val_f1_bank) = if val_f1_cknn > val_f1_knn {
        (
            neighbour_head(
                &config,
                &px,
                &y,
                &train,
                1,
                Some((projection_config, contrastive.varmap)),
            )?,
            val_f1_cknn,
        )
    } else {
        (
            neighbour_head(&config, &x, &y, &train, 1, None)?,
            val_f1_knn,
        )
    };
    Ok(choose(
        "ec",
        (config, fitted.varmap),
        bank,
        val_f1_mlp,
        val_f1_bank,
        metrics,
    ))
}

/// Trains and evaluates the GO head of one ontology (`mf`, `bp` or `cc`).
pub fn run_go(
    args: &FinetuneArgs,
    fx: &FeatureExtractor,
    ontology: &str,
    graph: &GoGraph,
) -> Result<TaskOutput> {
    let path = args.data.join(format!("function/go/{ontology}_18000.tsv"));
    let proteins = taskdata::seeded_subset(&taskdata::read_go(&path)?, args.go_proteins, args.seed);
    let annotations: Vec<BTreeSet<String>> = crate::reference::propagated_go(&proteins, graph);
    // Sequence-identity split: whole MMseqs2 clusters (30 % identity) go to the test set.
    let ids: Vec<String> = proteins.iter().map(|p| p.id.clone()).collect();
    let clusters = taskdata::mmseqs_clusters(
        &proteins
            .iter()
            .map(|p| (p.id.clone(), p.sequence.clone()))
            .collect::<Vec<_>>(),
        0.3,
        &args.work_dir().join(format!("mmseqs-go-{ontology}")),
    )?;
    let (train_ids, _test_ids) = taskdata::cluster_split(&clusters, &ids, 0.2, args.seed);
    let is_train: Vec<bool> = ids.iter().map(|id| train_ids.contains(id)).collect();
    let train_all: Vec<usize> = (0..proteins.len()).filter(|&i| is_train[i]).collect();
    let test: Vec<usize> = (0..proteins.len()).filter(|&i| !is_train[i]).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &train_all {
        for t in &annotations[i] {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let labels: Vec<String> = counts
        .iter()
        .filter(|(_, &c)| c >= args.go_min_count)
        .map(|(t, _)| t.to_string())
        .collect();
    let index = label_index(&labels);
    let ancestors: Vec<Vec<u32>> = labels
        .iter()
        .map(|l| {
            graph
                .with_ancestors(l)
                .iter()
                .filter(|a| *a != l)
                .filter_map(|a| index.get(a.as_str()).map(|&k| k as u32))
                .collect()
        })
        .collect();
    let y: Vec<Vec<usize>> = annotations
        .iter()
        .map(|a| {
            a.iter()
                .filter_map(|t| index.get(t.as_str()).copied())
                .collect()
        })
        .collect();
    // Truth for Fmax counts every annotated term, predictable or not.
    let mut extra = labels.len();
    let truth_of = |i: usize, extra: &mut usize| -> HashSet<usize> {
        annotations[i]
            .iter()
            .map(|t| {
                index.get(t.as_str()).copied().unwrap_or_else(|| {
                    *extra += 1;
                    *extra
                })
            })
            .collect()
    };
    let test_truth: Vec<HashSet<usize>> = test.iter().map(|&i| truth_of(i, &mut extra)).collect();
    let sequences: Vec<String> = proteins.iter().map(|p| p.sequence.clone()).collect();
    let x = fx.pooled(&format!("GO {ontology} features"), &sequences)?;
    let (tr, va) = split_validation(train_all.len(), 0.1, args.seed);
    let train: Vec<usize> = tr.iter().map(|&k| train_all[k]).collect();
    let val: Vec<usize> = va.iter().map(|&k| train_all[k]).collect();
    let config = FunctionHeadConfig {
        input_dim: x[0].len(),
        hidden: args.hidden,
        dropout: 0.2,
        terms: TermVocabulary {
            names: labels.iter().map(|l| graph.name(l)).collect(),
            labels: labels.clone(),
            ancestors: ancestors.clone(),
        },
    };
    let training = args.head_training();
    let fitted = fit(
        &format!("GO {ontology} head"),
        &x,
        &y,
        &val,
        &train,
        &config,
        &training,
    )?;
    let (f_mlp, t_mlp) = fmax(&test_truth, &predict(&fitted.head, &x, &test, &ancestors)?);
    let (f_knn, _) = fmax(
        &test_truth,
        &knn_scores(&x, &y, &train_all, &test, labels.len(), 10),
    );
    // Validation (not test) decides which head is deployed.
    let val_truth: Vec<HashSet<usize>> = val.iter().map(|&i| truth_of(i, &mut extra)).collect();
    let (val_mlp, _) = fmax(&val_truth, &predict(&fitted.head, &x, &val, &ancestors)?);
    let (val_knn, _) = fmax(
        &val_truth,
        &knn_scores(&x, &y, &train, &val, labels.len(), 10),
    );
    let comp: Vec<Vec<f32>> = sequences.iter().map(|s| composition(s)).collect();
    let comp_fit = fit(
        &format!("GO {ontology} composition"),
        &comp,
        &y,
        &val,
        &train,
        &FunctionHeadConfig {
            input_dim: comp[0].len(),
            ..config.clone()
        },
        &training,
    )?;
    let (f_comp, _) = fmax(
        &test_truth,
        &predict(&comp_fit.head, &comp, &test, &ancestors)?,
    );
    // Frequency baseline (the "naive" predictor of CAFA): every protein gets each term's
    // training frequency.
    let freq: Vec<f32> = (0..labels.len())
        .map(|k| counts[labels[k].as_str()] as f32 / train_all.len() as f32)
        .collect();
    let (f_naive, _) = fmax(&test_truth, &vec![freq; test.len()]);
    let metrics = json!({
        "protocol": format!("{} proteins drawn (seed {}) from {ontology}_18000.tsv, labels propagated up go_graph.tsv (roots removed); MMseqs2 clusters at 30% identity, whole clusters to the test set (20%); protein-centric Fmax over all annotated terms", proteins.len(), args.seed),
        "train_proteins": train_all.len(),
        "test_proteins": test.len(),
        "labels": labels.len(),
        "min_proteins_per_label": args.go_min_count,
        "mlp": {"fmax": f_mlp, "threshold": t_mlp},
        "nearest_neighbour_k10": {"fmax": f_knn},
        "composition_mlp": {"fmax": f_comp},
        "naive_frequency": {"fmax": f_naive},
    });
    let bank = neighbour_head(&config, &x, &y, &train_all, 10, None)?;
    Ok(choose(
        &format!("go_{ontology}"),
        (config, fitted.varmap),
        bank,
        val_mlp,
        val_knn,
        metrics,
    ))
}

/// Reads the GO graph of the data directory.
pub fn read_go_graph(data: &Path) -> Result<GoGraph> {
    let dir = data.join("function/go");
    GoGraph::read(&dir.join("go_graph.tsv"), &dir.join("go_names.tsv"))
        .context("reading the Gene Ontology")
}

/// [`label_sets`] over sparse scores: terms at or above `threshold`, and at least the best one.
pub fn label_sets_sparse(scores: &[BTreeMap<String, f32>], threshold: f32) -> Vec<HashSet<String>> {
    scores
        .iter()
        .map(|s| {
            let mut set: HashSet<String> = s
                .iter()
                .filter(|(_, &v)| v >= threshold)
                .map(|(t, _)| t.clone())
                .collect();
            if set.is_empty() {
                if let Some((best, _)) = s.iter().max_by(|a, b| a.1.total_cmp(b.1)) {
                    set.insert(best.clone());
                }
            }
            set
        })
        .collect()
}

/// The threshold (0.05 steps) with the best label-weighted F1 of sparse scores.
pub fn best_threshold_sparse(scores: &[BTreeMap<String, f32>], truth: &[HashSet<String>]) -> f32 {
    (1..20)
        .map(|t| t as f32 / 20.0)
        .map(|t| (t, weighted_prf(truth, &label_sets_sparse(scores, t)).2))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0.5, |(t, _)| t)
}
