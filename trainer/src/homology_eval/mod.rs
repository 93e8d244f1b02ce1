//! `plm-train homology`: evaluates a deployed model's task heads alone, homology transfer
//! alone and their blend, on two splits, against the naive and MMseqs2 nearest-neighbour
//! baselines; fits the blend weights on validation data and writes them into the model's
//! `heads.json` (`blend`) with the results (`results.json` → `homology`). Function terms here;
//! interactions in [`ppi`], binding sites in [`binding`].
//!
//! Every prediction goes through the served code ([`plm_model::predict`],
//! [`plm_model::homology`]), so the figures are those of `plm_function`. No test protein is
//! in the reference it is searched against, nor among the proteins the head was trained on:
//! - *identity split*: the head's own GO split (MMseqs2 clusters at 30 % identity, whole
//!   clusters held out), reference = the head's training proteins; for EC, CLEAN's NEW-392
//!   (enzymes added to Swiss-Prot later), reference = the EC training file.
//! - *random split*: proteins drawn at random from those the head never saw, reference = every
//!   other protein of the file (how a user's protein usually relates to annotated ones).

mod binary;
mod binding;
mod ppi;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use plm_model::homology::{self, Blend, FunctionReference, Method};
use plm_model::predict::model_function_scores;
use plm_model::{DeviceSpec, EmbeddingCache, Engine, EngineOptions, LoadOptions, TaskHeads};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::finetune::function::{best_threshold_sparse, read_go_graph};
use crate::finetune::split_validation;
use crate::metrics::{fmax_sparse, weighted_prf};
use crate::reference::{propagated_go, FunctionSet};
use crate::taskdata::{self, LabeledProtein};

/// Arguments of `plm-train homology`.
#[derive(Debug, Clone, Args)]
pub struct HomologyArgs {
    /// Model directory with function heads (updated in place: `heads.json`, `results.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// The shared data directory (`function/`).
    #[arg(long)]
    pub data: PathBuf,
    /// Tasks, comma-separated: `function`, `ppi`, `binding`.
    #[arg(long, default_value = "function,ppi,binding", value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Ontologies of the function task, comma-separated.
    #[arg(long, default_value = "go_mf,go_bp,go_cc,ec", value_delimiter = ',')]
    pub ontologies: Vec<String>,
    /// Test pairs of the interaction random split.
    #[arg(long, default_value_t = 4000)]
    pub test_pairs: usize,
    /// Validation pairs (blend weight) of the interaction random split.
    #[arg(long, default_value_t = 2000)]
    pub validation_pairs: usize,
    /// Pairs drawn from each cross-species interaction set.
    #[arg(long, default_value_t = 2000)]
    pub cross_species_pairs: usize,
    /// Longest binding test chain evaluated (residues).
    #[arg(long, default_value_t = 1000)]
    pub max_binding_length: usize,
    /// Test proteins of the function tasks' random splits (interactions: --test-pairs; binding
    /// sites: a third of each test file joins the reference).
    #[arg(long, default_value_t = 1000)]
    pub test_proteins: usize,
    /// Validation proteins (blend weight, thresholds) of the function tasks' random splits.
    #[arg(long, default_value_t = 500)]
    pub validation_proteins: usize,
    /// Seed of the random splits.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Scratch directory (MMseqs2 files).
    #[arg(long, default_value = "runs/homology")]
    pub work: PathBuf,
    /// Evaluate only; leave the model directory unchanged (the results go to `WORK/results.json`).
    #[arg(long)]
    pub dry_run: bool,
}

/// Blend weights tried on validation: 0, 0.05, ..., 1.
fn alphas() -> impl Iterator<Item = f32> {
    (0..=20).map(|k| k as f32 / 20.0)
}

/// Hit-weight exponents of homology transfer tried on validation.
const SHARPNESS: [f32; 5] = [1.0, 2.0, 4.0, 8.0, 16.0];

type Scores = BTreeMap<String, f32>;

/// The model's and homology's scores of a set of query proteins.
struct Predicted {
    model: Vec<Scores>,
    /// Homology scores for each of [`SHARPNESS`].
    homology: Vec<Vec<Scores>>,
    /// Proteins with at least one hit.
    with_hits: usize,
}

impl Predicted {
    fn homology(&self, blend: Blend) -> &[Scores] {
        let k = SHARPNESS
            .iter()
            .position(|&s| s == blend.sharpness)
            .unwrap_or(0);
        &self.homology[k]
    }

    fn combined(&self, blend: Blend) -> Vec<Scores> {
        self.model
            .iter()
            .zip(self.homology(blend))
            .map(|(m, h)| homology::combine(m, h, Method::Combined, blend))
            .collect()
    }
}

struct Evaluator {
    engine: Engine,
    heads: TaskHeads,
    model_cache: HashMap<(String, String), Scores>,
    /// Pooled features by sequence (interaction).
    pooled_cache: HashMap<String, Vec<f32>>,
    /// The binding GNN's scores by sequence, by ligand.
    binding_cache: HashMap<String, HashMap<String, Vec<f32>>>,
}

impl Evaluator {
    fn predict(
        &mut self,
        ontology: &str,
        queries: &[&LabeledProtein],
        reference: &FunctionReference,
    ) -> Result<Predicted> {
        let progress = crate::finetune::features::progress(
            queries.len(),
            &format!("{ontology}: model + homology"),
        );
        let mut out = Predicted {
            model: Vec::new(),
            homology: vec![Vec::new(); SHARPNESS.len()],
            with_hits: 0,
        };
        for q in queries {
            let key = (ontology.to_string(), q.sequence.clone());
            if !self.model_cache.contains_key(&key) {
                let (scores, _) =
                    model_function_scores(&self.engine, Some(&self.heads), &q.sequence, ontology)?;
                self.model_cache.insert(key.clone(), scores);
            }
            out.model.push(self.model_cache[&key].clone());
            let hits = reference.search(&q.sequence)?;
            out.with_hits += usize::from(!hits.is_empty());
            for (k, &sharpness) in SHARPNESS.iter().enumerate() {
                let t = reference.transfer(&hits, sharpness);
                out.homology[k].push(
                    t.scores
                        .into_iter()
                        .map(|(k, s)| (reference.terms[k as usize].clone(), s))
                        .collect(),
                );
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok(out)
    }
}

/// One split of one ontology: queries for the blend weight, queries for the test, and the
/// reference each is searched against.
struct Split<'a> {
    name: &'static str,
    description: String,
    validation: Vec<&'a LabeledProtein>,
    validation_reference: Vec<&'a LabeledProtein>,
    test: Vec<&'a LabeledProtein>,
    test_reference: Vec<&'a LabeledProtein>,
}

/// Runs the evaluation and writes the blend weights and results.
pub fn run(args: &HomologyArgs, device: DeviceSpec) -> Result<()> {
    let engine = Engine::load(
        &args.model,
        LoadOptions {
            device,
            ..LoadOptions::default()
        },
        EngineOptions {
            long_sequences: plm_model::LongSequencePolicy::Window,
            ..EngineOptions::default()
        },
        Arc::new(EmbeddingCache::new(256 << 20)),
    )?;
    let heads = TaskHeads::open(&args.model, &candle_core::Device::Cpu)?
        .with_context(|| format!("{} has no task heads", args.model.display()))?;
    let mut eval = Evaluator {
        engine,
        heads,
        model_cache: HashMap::new(),
        pooled_cache: HashMap::new(),
        binding_cache: HashMap::new(),
    };
    let mut results = serde_json::Map::new();
    let mut blend = BTreeMap::new();
    for task in &args.tasks {
        if !["function", "ppi", "binding"].contains(&task.as_str()) {
            bail!("unknown task {task} (function, ppi, binding)");
        }
    }
    let wants = |t: &str| args.tasks.iter().any(|x| x == t);
    let ontologies = if wants("function") {
        args.ontologies.as_slice()
    } else {
        &[]
    };
    for ontology in ontologies {
        let (value, fitted) = if ontology == "ec" {
            evaluate_ec(args, &mut eval)?
        } else if let Some(o) = ontology.strip_prefix("go_") {
            evaluate_go(args, &mut eval, o)?
        } else {
            bail!("unknown ontology {ontology} (ec, go_mf, go_bp, go_cc)");
        };
        println!("{ontology}: {}", summary(&value));
        results.insert(ontology.clone(), value);
        blend.insert(ontology.clone(), fitted);
    }
    if wants("ppi") {
        let (value, fitted) = ppi::evaluate(args, &mut eval)?;
        results.insert("ppi".into(), value);
        blend.insert("ppi".into(), fitted);
    }
    if wants("binding") {
        let (value, fitted) = binding::evaluate(args, &mut eval)?;
        results.insert("binding".into(), value);
        blend.extend(fitted);
    }
    if args.dry_run {
        let path = args.work.join("results.json");
        std::fs::create_dir_all(&args.work)?;
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(results))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "dry run: results in {}, blends not deployed",
            path.display()
        );
        return Ok(());
    }
    crate::model_dir::update_heads_and_results(
        &args.model,
        |config| config.blend.extend(blend),
        |all| {
            let entry = all.entry("homology").or_insert(json!({}));
            for (k, v) in results {
                entry[k] = v;
            }
        },
    )
}

fn summary(v: &Value) -> String {
    let mut parts = Vec::new();
    for split in ["identity_split", "new392_split", "random_split"] {
        if let Some(s) = v.get(split) {
            let f = |k: &str| s[k]["value"].as_f64().unwrap_or(f64::NAN);
            parts.push(format!(
                "{split}: model {:.3} homology {:.3} combined {:.3} mmseqs2-nn {:.3} naive {:.3}",
                f("model"),
                f("homology"),
                f("combined"),
                f("mmseqs2_nearest_neighbour"),
                f("naive")
            ));
        }
    }
    parts.join("; ")
}

/// One line of a binary task's test figures (AUROC).
fn binary_summary(v: &Value) -> String {
    let f = |k: &str| v[k]["auroc"].as_f64().unwrap_or(f64::NAN);
    format!(
        "AUROC model {:.3} homology {:.3} combined {:.3} mmseqs2-nn {:.3} ({} of {} with homology); ECE combined {:.3} -> {:.3}",
        f("model"),
        f("homology"),
        f("combined"),
        f("mmseqs2_nearest_neighbour"),
        v["with_homology"],
        v["items"],
        v["calibration"]["combined"]["ece_raw"].as_f64().unwrap_or(f64::NAN),
        v["calibration"]["combined"]["ece"].as_f64().unwrap_or(f64::NAN),
    )
}

fn reference_of(
    task: &str,
    proteins: &[&LabeledProtein],
    name: &dyn Fn(&str) -> String,
) -> Result<FunctionReference> {
    let rows: Vec<_> = proteins
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                p.sequence.clone(),
                p.labels.iter().cloned().collect::<BTreeSet<_>>(),
            )
        })
        .collect();
    FunctionSet::new(&rows, name).build(task, "evaluation split")
}

/// The finetune settings the head of `task` (`ec`, `go`, `ppi`) was fitted with: GO proteins
/// drawn per ontology and the seed of every split, from the last `plm-train finetune --update`
/// that retrained it (`heads.json` → `metrics.finetune_updates`), else from the run that
/// trained them all (`metrics.finetune`).
fn head_settings(metrics: &Value, task: &str) -> Result<(usize, u64)> {
    let f = crate::finetune::trained_by(metrics, task);
    match (f["go_proteins"].as_u64(), f["seed"].as_u64()) {
        (Some(n), Some(seed)) => Ok((n as usize, seed)),
        _ => bail!("heads.json does not record the finetune settings (metrics.finetune.go_proteins, seed); cannot tell which proteins the heads were trained on"),
    }
}

fn evaluate_go(args: &HomologyArgs, eval: &mut Evaluator, o: &str) -> Result<(Value, Blend)> {
    let ontology = format!("go_{o}");
    let graph = read_go_graph(&args.data)?;
    let raw = taskdata::read_go(&args.data.join(format!("function/go/{o}_18000.tsv")))?;
    let (n, seed) = head_settings(&eval.heads.config.metrics, "go")?;
    let subset_ids: HashSet<String> = taskdata::seeded_subset(&raw, n, seed)
        .into_iter()
        .map(|p| p.id)
        .collect();
    // Labels as the heads and the shipped reference see them: propagated, roots removed.
    let all: Vec<LabeledProtein> = raw
        .iter()
        .zip(propagated_go(&raw, &graph))
        .filter(|(_, l)| !l.is_empty())
        .map(|(p, l)| LabeledProtein {
            id: p.id.clone(),
            sequence: p.sequence.clone(),
            labels: l.into_iter().collect(),
        })
        .collect();
    let subset: Vec<&LabeledProtein> = all.iter().filter(|p| subset_ids.contains(&p.id)).collect();

    // The head's own identity split, recomputed as finetune made it.
    let clusters = taskdata::mmseqs_clusters(
        &subset
            .iter()
            .map(|p| (p.id.clone(), p.sequence.clone()))
            .collect::<Vec<_>>(),
        0.3,
        &args.work.join(format!("clusters-{ontology}")),
    )?;
    let ids: Vec<String> = subset.iter().map(|p| p.id.clone()).collect();
    let (train_ids, _) = taskdata::cluster_split(&clusters, &ids, 0.2, seed);
    let train_all: Vec<&LabeledProtein> = subset
        .iter()
        .copied()
        .filter(|p| train_ids.contains(&p.id))
        .collect();
    let test: Vec<&LabeledProtein> = subset
        .iter()
        .copied()
        .filter(|p| !train_ids.contains(&p.id))
        .collect();
    let (tr, va) = split_validation(train_all.len(), 0.1, seed);
    let identity = Split {
        name: "identity_split",
        description: format!("the head's split of {n} proteins (seed {seed}): MMseqs2 clusters at 30% identity, whole clusters held out; reference = the head's training proteins"),
        validation: va.iter().map(|&i| train_all[i]).collect(),
        validation_reference: tr.iter().map(|&i| train_all[i]).collect(),
        test,
        test_reference: train_all.clone(),
    };
    let random = random_split(args, &all, &subset_ids, "proteins the head never saw");
    let name = |t: &str| graph.name(t);
    let mut out = json!({});
    let mut deployed = Blend::default();
    for split in [identity, random] {
        let (value, a) = evaluate_split(args, eval, &ontology, &split, &name, Metric::Fmax)?;
        deployed = deploy(deployed, split.name, a);
        out[split.name] = value;
    }
    out["deployed_blend"] = json!(deployed);
    out["deployed_blend_from"] = json!(DEPLOY_RULE);
    Ok((out, deployed))
}

/// How the deployed blend is taken from the two splits' fits.
const DEPLOY_RULE: &str = "weight and sharpness fitted on the random split's validation proteins; whether the model answers alone without hits fitted on the held-out split's, whose proteins mostly have no hits";

/// Folds the blend fitted on split `name` into the deployed one (see [`DEPLOY_RULE`]).
fn deploy(deployed: Blend, name: &str, fitted: Blend) -> Blend {
    if name == "random_split" {
        Blend {
            model_without_hits: deployed.model_without_hits,
            ..fitted
        }
    } else {
        Blend {
            model_without_hits: fitted.model_without_hits,
            ..deployed
        }
    }
}

/// Test and validation proteins drawn from those outside `seen`; references are all the
/// other proteins.
fn random_split<'a>(
    args: &HomologyArgs,
    all: &'a [LabeledProtein],
    seen: &HashSet<String>,
    pool: &str,
) -> Split<'a> {
    let mut unseen: Vec<usize> = (0..all.len())
        .filter(|&i| !seen.contains(&all[i].id))
        .collect();
    unseen.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let n_test = args.test_proteins.min(unseen.len() / 2);
    let n_val = args.validation_proteins.min(unseen.len() - n_test);
    let test: HashSet<usize> = unseen[..n_test].iter().copied().collect();
    let val: HashSet<usize> = unseen[n_test..n_test + n_val].iter().copied().collect();
    let pick = |keep: &dyn Fn(usize) -> bool| -> Vec<&'a LabeledProtein> {
        (0..all.len())
            .filter(|&i| keep(i))
            .map(|i| &all[i])
            .collect()
    };
    Split {
        name: "random_split",
        description: format!("{n_test} test and {n_val} validation proteins drawn at random (seed {}) from {pool}; reference = every other protein of the file", args.seed),
        validation: pick(&|i| val.contains(&i)),
        validation_reference: pick(&|i| !test.contains(&i) && !val.contains(&i)),
        test: pick(&|i| test.contains(&i)),
        test_reference: pick(&|i| !test.contains(&i)),
    }
}

/// How a split is scored.
#[derive(Clone, Copy, PartialEq)]
enum Metric {
    /// Protein-centric Fmax (GO).
    Fmax,
    /// Label-weighted F1 at the threshold best on validation (EC, as CLEAN reports).
    WeightedF1,
}

fn truth(proteins: &[&LabeledProtein]) -> Vec<HashSet<String>> {
    proteins
        .iter()
        .map(|p| p.labels.iter().cloned().collect())
        .collect()
}

/// The metric of `scores`, and its threshold (fitted on validation for weighted F1).
fn score(
    metric: Metric,
    truth: &[HashSet<String>],
    scores: &[Scores],
    threshold: Option<f32>,
) -> (f64, f32) {
    match metric {
        Metric::Fmax => fmax_sparse(truth, scores),
        Metric::WeightedF1 => {
            let t = threshold.unwrap_or_else(|| best_threshold_sparse(scores, truth));
            let sets = crate::finetune::function::label_sets_sparse(scores, t);
            (weighted_prf(truth, &sets).2, t)
        }
    }
}

fn evaluate_split(
    args: &HomologyArgs,
    eval: &mut Evaluator,
    ontology: &str,
    split: &Split<'_>,
    name: &dyn Fn(&str) -> String,
    metric: Metric,
) -> Result<(Value, Blend)> {
    let val_ref = reference_of(ontology, &split.validation_reference, name)?;
    let val = eval.predict(ontology, &split.validation, &val_ref)?;
    drop(val_ref);
    let val_truth = truth(&split.validation);
    // The hit weighting best for homology alone, then the blend weight best for the blend.
    let sharpness = SHARPNESS
        .iter()
        .map(|&sharpness| {
            let b = Blend {
                alpha: 1.0,
                sharpness,
                model_without_hits: false,
                ..Blend::default()
            };
            (
                sharpness,
                score(metric, &val_truth, val.homology(b), None).0,
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(1.0, |(s, _)| s);
    // Then the blend weight, and whether the model answers alone without hits.
    let mut by_alpha: Vec<(f32, bool, f64)> = Vec::new();
    for model_without_hits in [true, false] {
        for alpha in alphas() {
            let b = Blend {
                alpha,
                sharpness,
                model_without_hits,
                ..Blend::default()
            };
            by_alpha.push((
                alpha,
                model_without_hits,
                score(metric, &val_truth, &val.combined(b), None).0,
            ));
        }
    }
    // Ties go to the model answering alone, then to the larger weight on homology.
    let (alpha, model_without_hits, _) = by_alpha
        .iter()
        .copied()
        .max_by(|a, b| {
            a.2.total_cmp(&b.2)
                .then(a.1.cmp(&b.1))
                .then(a.0.total_cmp(&b.0))
        })
        .unwrap_or((0.5, true, 0.0));
    let blend = Blend {
        alpha,
        sharpness,
        model_without_hits,
        ..Blend::default()
    };
    // Thresholds (weighted F1) come from validation too.
    let threshold = |scores: &[Scores]| match metric {
        Metric::Fmax => None,
        Metric::WeightedF1 => Some(best_threshold_sparse(scores, &val_truth)),
    };
    let t_model = threshold(&val.model);
    let t_homology = threshold(val.homology(blend));
    let t_combined = threshold(&val.combined(blend));

    let test_ref = reference_of(ontology, &split.test_reference, name)?;
    let test = eval.predict(ontology, &split.test, &test_ref)?;
    let test_truth = truth(&split.test);
    let naive = naive_scores(&split.test_reference);
    let nn = mmseqs_nearest_neighbour(args, ontology, split)?;
    let t_naive = threshold(&vec![naive.clone(); split.validation.len()]);
    let t_nn = match metric {
        Metric::Fmax => None,
        Metric::WeightedF1 => Some(0.0),
    };
    let entry = |scores: &[Scores], t: Option<f32>| {
        let (value, threshold) = score(metric, &test_truth, scores, t);
        json!({"value": value, "threshold": threshold})
    };
    let metric_name = match metric {
        Metric::Fmax => "protein-centric Fmax",
        Metric::WeightedF1 => "label-weighted F1 (thresholds from validation)",
    };
    let value = json!({
        "description": split.description,
        "metric": metric_name,
        "test_proteins": split.test.len(),
        "test_reference_proteins": split.test_reference.len(),
        "test_proteins_with_hits": test.with_hits,
        "validation_proteins": split.validation.len(),
        "blend": blend,
        "validation_by_alpha": by_alpha
            .iter()
            .map(|(a, fallback, v)| json!({"alpha": a, "model_without_hits": fallback, "value": v}))
            .collect::<Vec<_>>(),
        "model": entry(&test.model, t_model),
        "homology": entry(test.homology(blend), t_homology),
        "combined": entry(&test.combined(blend), t_combined),
        "naive": entry(&vec![naive; split.test.len()], t_naive),
        "mmseqs2_nearest_neighbour": entry(&nn, t_nn),
    });
    Ok((value, blend))
}

/// CAFA's naive predictor: each term's frequency in the reference.
fn naive_scores(reference: &[&LabeledProtein]) -> Scores {
    let mut counts: BTreeMap<String, f32> = BTreeMap::new();
    for p in reference {
        for l in &p.labels {
            *counts.entry(l.clone()).or_default() += 1.0;
        }
    }
    let n = reference.len().max(1) as f32;
    counts.into_iter().map(|(t, c)| (t, c / n)).collect()
}

/// The labels of each test protein's best MMseqs2 hit in the reference, scored by the hit's
/// identity (no hit: nothing).
fn mmseqs_nearest_neighbour(
    args: &HomologyArgs,
    ontology: &str,
    split: &Split<'_>,
) -> Result<Vec<Scores>> {
    let work = args.work.join(format!("search-{ontology}-{}", split.name));
    let fasta = |p: &[&LabeledProtein]| -> Vec<(String, String)> {
        p.iter()
            .map(|p| (p.id.clone(), p.sequence.clone()))
            .collect()
    };
    let hits =
        taskdata::mmseqs_best_hits(&fasta(&split.test), &fasta(&split.test_reference), &work)?;
    let labels: HashMap<&str, &[String]> = split
        .test_reference
        .iter()
        .map(|p| (p.id.as_str(), p.labels.as_slice()))
        .collect();
    Ok(split
        .test
        .iter()
        .map(|q| match hits.get(&q.id) {
            Some((target, identity)) => labels
                .get(target.as_str())
                .map(|ls| ls.iter().map(|l| (l.clone(), *identity)).collect())
                .unwrap_or_default(),
            None => Scores::new(),
        })
        .collect())
}

fn evaluate_ec(args: &HomologyArgs, eval: &mut Evaluator) -> Result<(Value, Blend)> {
    let dir = args.data.join("function/ec");
    let train = taskdata::read_ec(&dir.join("train.tsv"))?;
    let new392 = taskdata::read_ec(&dir.join("test_new392.tsv"))?;
    // The deployed head (finetune's seed) was fitted on the 90 % part; the 10 % part is unseen.
    let (_, seed) = head_settings(&eval.heads.config.metrics, "ec")?;
    let (fit_part, held_out) = split_validation(train.len(), 0.1, seed);
    let fit_refs: Vec<&LabeledProtein> = fit_part.iter().map(|&i| &train[i]).collect();
    let held: Vec<&LabeledProtein> = held_out.iter().map(|&i| &train[i]).collect();
    let (val_half, test_half) = held.split_at(held.len() / 2);
    let temporal = Split {
        name: "new392_split",
        description: "CLEAN's NEW-392 (enzymes added to Swiss-Prot after the training data); validation = the 10% of train.tsv the head did not see, against the other 90%; test reference = all of train.tsv".into(),
        validation: held.clone(),
        validation_reference: fit_refs.clone(),
        test: new392.iter().collect(),
        test_reference: train.iter().collect(),
    };
    let random = Split {
        name: "random_split",
        description: format!("the 10% of train.tsv the head did not see, halved: {} validation and {} test proteins; reference = the other 90%", val_half.len(), test_half.len()),
        validation: val_half.to_vec(),
        validation_reference: fit_refs.clone(),
        test: test_half.to_vec(),
        test_reference: fit_refs,
    };
    let mut out = json!({});
    let mut deployed = Blend::default();
    for split in [temporal, random] {
        let (value, a) = evaluate_split(
            args,
            eval,
            "ec",
            &split,
            &|_| String::new(),
            Metric::WeightedF1,
        )?;
        deployed = deploy(deployed, split.name, a);
        out[split.name] = value;
    }
    out["deployed_blend"] = json!(deployed);
    out["deployed_blend_from"] = json!(DEPLOY_RULE);
    Ok((out, deployed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_evaluated_on_the_split_of_the_run_that_last_trained_it() {
        let metrics = json!({
            "finetune": {"tasks": ["ec", "go", "ppi"], "go_proteins": 1200, "seed": 42},
            "finetune_updates": [
                {"tasks": ["go"], "go_proteins": 18000, "seed": 7},
                {"tasks": ["ec"], "go_proteins": 4000, "seed": 9},
            ],
        });
        assert_eq!(head_settings(&metrics, "go").unwrap(), (18000, 7));
        assert_eq!(head_settings(&metrics, "ec").unwrap(), (4000, 9));
        assert_eq!(head_settings(&metrics, "ppi").unwrap(), (1200, 42));
        let none = json!({"finetune": {"tasks": ["ec"]}});
        assert!(head_settings(&none, "ec").is_err());
    }
}
