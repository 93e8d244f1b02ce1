//! The binding-site head: per-residue language-model features through GNN layers over the
//! residue contact graph, trained on GPSite's ten ligand sets and GraphPPIS's interfaces, with
//! ablations (one-hot residues, language-model features without message passing).

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use plm_model::gnn::{EdgeIndex, GnnConfig, GnnKind};
use plm_model::graph::{GraphBatch, GraphOptions, ResidueGraph};
use plm_model::heads::{sigmoid, BindingHead, BindingHeadConfig, LIGANDS};
use serde_json::json;

use super::features::{one_hot, FeatureExtractor, ResidueFeatures};
use super::train::{bce_with_logits, train_head};
use super::{split_validation, FinetuneArgs, TaskOutput};
use crate::metrics::{aupr, auroc, best_mcc_threshold, Confusion};
use crate::taskdata::{self, ResidueLabels};

/// Proteins with per-residue labels for some of the ligand columns.
struct Dataset {
    sequences: Vec<String>,
    /// Per protein: residues × ligands targets.
    targets: Vec<Vec<f32>>,
    /// Per protein: which ligand columns are labelled.
    known: Vec<Vec<bool>>,
}

impl Dataset {
    fn add(&mut self, index: &mut HashMap<String, usize>, p: &ResidueLabels, column: usize) {
        let n = LIGANDS.len();
        let k = *index.entry(p.sequence.clone()).or_insert_with(|| {
            self.sequences.push(p.sequence.clone());
            self.targets.push(vec![0.0; p.sequence.len() * n]);
            self.known.push(vec![false; n]);
            self.sequences.len() - 1
        });
        self.known[k][column] = true;
        for (r, &l) in p.labels.iter().enumerate() {
            if l {
                self.targets[k][r * n + column] = 1.0;
            }
        }
    }
}

/// Input features of a model variant.
enum Inputs<'a> {
    Language(&'a ResidueFeatures),
    OneHot(&'a [String]),
}

impl Inputs<'_> {
    fn dim(&self) -> usize {
        match self {
            Inputs::Language(f) => f.dim,
            Inputs::OneHot(_) => 21,
        }
    }
    fn tensor(&self, proteins: &[usize]) -> Result<Tensor> {
        match self {
            Inputs::Language(f) => f.tensor(proteins, &Device::Cpu),
            Inputs::OneHot(s) => one_hot(
                &proteins.iter().map(|&p| s[p].as_str()).collect::<Vec<_>>(),
                &Device::Cpu,
            ),
        }
    }
}

fn graphs_of(
    lengths: &[usize],
    contacts: &[Vec<(usize, usize)>],
    options: &GraphOptions,
) -> Result<Vec<ResidueGraph>> {
    lengths
        .iter()
        .zip(contacts)
        .map(|(&n, c)| Ok(ResidueGraph::from_pairs(n, c.iter().copied(), options)?))
        .collect()
}

fn batch_edges(graphs: &[ResidueGraph], proteins: &[usize]) -> Result<EdgeIndex> {
    let refs: Vec<&ResidueGraph> = proteins.iter().map(|&p| &graphs[p]).collect();
    Ok(EdgeIndex::new(&GraphBatch::new(&refs), &Device::Cpu)?)
}

/// Per-residue probabilities `[residues × ligands]` of each protein.
fn predict(
    head: &BindingHead,
    inputs: &Inputs,
    graphs: &[ResidueGraph],
    proteins: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for chunk in proteins.chunks(16) {
        let logits = head.forward(&inputs.tensor(chunk)?, &batch_edges(graphs, chunk)?, false)?;
        let cols = logits.dim(1)?;
        let flat = sigmoid(&logits.flatten_all()?.to_vec1::<f32>()?);
        let mut start = 0;
        for &p in chunk {
            let n = graphs[p].num_nodes();
            out.push(flat[start * cols..(start + n) * cols].to_vec());
            start += n;
        }
    }
    Ok(out)
}

/// Scores and labels of one ligand column over proteins that have it labelled.
fn column(
    scores: &[Vec<f32>],
    data: &Dataset,
    proteins: &[usize],
    c: usize,
) -> (Vec<f32>, Vec<bool>) {
    let n = LIGANDS.len();
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for (k, &p) in proteins.iter().enumerate() {
        if data.known[p][c] {
            for r in 0..data.sequences[p].len() {
                s.push(scores[k][r * n + c]);
                l.push(data.targets[p][r * n + c] > 0.5);
            }
        }
    }
    (s, l)
}

struct Variant<'a> {
    name: &'a str,
    inputs: Inputs<'a>,
    gnn: GnnConfig,
}

#[allow(clippy::too_many_arguments)]
fn fit(
    args: &FinetuneArgs,
    variant: &Variant,
    train: &Dataset,
    graphs: &[ResidueGraph],
    tr: &[usize],
    va: &[usize],
    options: &GraphOptions,
) -> Result<(VarMap, BindingHead, BindingHeadConfig)> {
    let config = BindingHeadConfig {
        input_dim: variant.inputs.dim(),
        ligands: LIGANDS.iter().map(|s| s.to_string()).collect(),
        gnn: variant.gnn.clone(),
        graph: *options,
        dropout: 0.2,
    };
    let varmap = VarMap::new();
    let head = BindingHead::load(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &config,
    )?;
    let n = LIGANDS.len();
    let mut training = args.head_training();
    training.batch_size = 8;
    training.epochs = args.binding_epochs;
    train_head(
        &format!("binding {}", variant.name),
        &varmap,
        &training,
        tr.len(),
        |batch| {
            let proteins: Vec<usize> = batch.iter().map(|&b| tr[b]).collect();
            let logits = head.forward(
                &variant.inputs.tensor(&proteins)?,
                &batch_edges(graphs, &proteins)?,
                true,
            )?;
            let mut t = Vec::new();
            let mut m = Vec::new();
            for &p in &proteins {
                t.extend_from_slice(&train.targets[p]);
                for _ in 0..train.sequences[p].len() {
                    m.extend(train.known[p].iter().map(|&k| k as u8 as f32));
                }
            }
            let rows = t.len() / n;
            let t = Tensor::from_vec(t, (rows, n), &Device::Cpu)?;
            let m = Tensor::from_vec(m, (rows, n), &Device::Cpu)?;
            bce_with_logits(&logits, &t, Some(&m))
        },
        || {
            let scores = predict(&head, &variant.inputs, graphs, va)?;
            let values: Vec<f64> = (0..n)
                .filter_map(|c| {
                    let (s, l) = column(&scores, train, va, c);
                    aupr(&s, &l)
                })
                .collect();
            Ok(values.iter().sum::<f64>() / values.len().max(1) as f64)
        },
    )?;
    Ok((varmap, head, config))
}

/// The training and test label files of `ligand` under the data directory: GraphPPIS for the
/// protein–protein interface (`PPI`), GPSite for the others.
pub fn label_files(ligand: &str) -> (String, String) {
    if ligand == "PPI" {
        (
            "binding/graphppis/Train_335.fa".to_string(),
            "binding/graphppis/Test_60.fa".to_string(),
        )
    } else {
        (
            format!("binding/gpsite/{ligand}_train.txt"),
            format!("binding/gpsite/{ligand}_test.txt"),
        )
    }
}

/// Trains the binding-site head and its ablations and evaluates them on the test sets.
pub fn run(args: &FinetuneArgs, fx: &FeatureExtractor) -> Result<TaskOutput> {
    let n = LIGANDS.len();
    let mut train = Dataset {
        sequences: vec![],
        targets: vec![],
        known: vec![],
    };
    let mut index = HashMap::new();
    let mut tests: Vec<(usize, Vec<ResidueLabels>)> = Vec::new();
    for (c, ligand) in LIGANDS.iter().enumerate() {
        let (train_file, test_file) = label_files(ligand);
        let proteins = taskdata::read_residue_labels(&args.data.join(&train_file))?;
        for p in taskdata::seeded_subset(&proteins, args.binding_proteins, args.seed) {
            train.add(&mut index, &p, c);
        }
        let test_proteins = taskdata::read_residue_labels(&args.data.join(&test_file))?;
        tests.push((
            c,
            taskdata::seeded_subset(&test_proteins, args.binding_proteins, args.seed),
        ));
    }
    let mut test = Dataset {
        sequences: vec![],
        targets: vec![],
        known: vec![],
    };
    let mut test_index = HashMap::new();
    let mut test_ids: HashMap<String, usize> = HashMap::new();
    for (c, proteins) in &tests {
        for p in proteins {
            test.add(&mut test_index, p, *c);
            if *c == n - 1 {
                test_ids.insert(p.id.clone(), test_index[&p.sequence]);
            }
        }
    }
    let options = GraphOptions {
        sequence_window: 2,
        contact_threshold: args.contact_threshold,
        distance_cutoff: 8.0,
    };
    let train_features = fx.residues("binding train features", &train.sequences)?;
    let test_features = fx.residues("binding test features", &test.sequences)?;
    let train_contacts = fx.contacts(
        "binding train contacts",
        &train.sequences,
        options.contact_threshold,
    )?;
    let test_contacts = fx.contacts(
        "binding test contacts",
        &test.sequences,
        options.contact_threshold,
    )?;
    let lengths = |d: &Dataset| d.sequences.iter().map(|s| s.len()).collect::<Vec<_>>();
    let train_graphs = graphs_of(&lengths(&train), &train_contacts, &options)?;
    let test_graphs = graphs_of(&lengths(&test), &test_contacts, &options)?;
    let (tr, va) = split_validation(train.sequences.len(), 0.1, args.seed);
    let all_test: Vec<usize> = (0..test.sequences.len()).collect();

    let gnn = GnnConfig {
        kind: GnnKind::Gated,
        layers: args.gnn_layers,
        hidden: 128,
    };
    let variants = [
        Variant {
            name: "LM + gated GNN",
            inputs: Inputs::Language(&train_features),
            gnn: gnn.clone(),
        },
        Variant {
            name: "LM + MLP (no graph)",
            inputs: Inputs::Language(&train_features),
            gnn: GnnConfig {
                layers: 0,
                ..gnn.clone()
            },
        },
        Variant {
            name: "one-hot + gated GNN",
            inputs: Inputs::OneHot(&train.sequences),
            gnn: gnn.clone(),
        },
    ];
    let mut results = serde_json::Map::new();
    let mut deployed = None;
    for (k, variant) in variants.iter().enumerate() {
        if k > 0 && !args.ablations {
            break;
        }
        let (varmap, head, config) = fit(args, variant, &train, &train_graphs, &tr, &va, &options)?;
        let val_scores = predict(&head, &variant.inputs, &train_graphs, &va)?;
        let test_inputs = match variant.inputs {
            Inputs::Language(_) => Inputs::Language(&test_features),
            Inputs::OneHot(_) => Inputs::OneHot(&test.sequences),
        };
        let test_scores = predict(&head, &test_inputs, &test_graphs, &all_test)?;
        let mut per_ligand = serde_json::Map::new();
        for (c, ligand) in LIGANDS.iter().enumerate() {
            let (vs, vl) = column(&val_scores, &train, &va, c);
            let threshold = best_mcc_threshold(&vs, &vl);
            let (s, l) = column(&test_scores, &test, &all_test, c);
            per_ligand.insert(
                ligand.to_string(),
                json!({
                    "auroc": auroc(&s, &l), "aupr": aupr(&s, &l),
                    "mcc": Confusion::new(&s, &l, threshold).mcc(), "threshold": threshold,
                    "residues": l.len(), "positives": l.iter().filter(|&&v| v).count(),
                }),
            );
        }
        // GraphPPIS Test_60 with the native structures' contacts instead of predicted ones.
        if let Inputs::Language(_) = variant.inputs {
            if variant.gnn.layers > 0 {
                let native = taskdata::read_contacts(
                    &args.data.join("binding/graphppis/Test_60_contacts.tsv.gz"),
                    8.0,
                )
                .context("reading Test_60 native contacts")?;
                let proteins: Vec<usize> = test_ids.values().copied().collect();
                let mut graphs = test_graphs.clone();
                for (id, &p) in &test_ids {
                    let chain = id.replace('_', "");
                    if let Some(pairs) = native.get(&chain).or_else(|| native.get(id)) {
                        graphs[p] = ResidueGraph::from_pairs(
                            test.sequences[p].len(),
                            pairs.iter().copied(),
                            &options,
                        )?;
                    }
                }
                let scores = predict(&head, &test_inputs, &graphs, &proteins)?;
                let (s, l) = column(&scores, &test, &proteins, n - 1);
                let threshold = per_ligand["PPI"]["threshold"].as_f64().unwrap_or(0.5) as f32;
                per_ligand.insert("PPI_native_contacts".into(), json!({
                    "auroc": auroc(&s, &l), "aupr": aupr(&s, &l), "mcc": Confusion::new(&s, &l, threshold).mcc(),
                }));
            }
        }
        results.insert(
            variant.name.to_string(),
            serde_json::Value::Object(per_ligand),
        );
        if k == 0 {
            deployed = Some((config, varmap));
        }
    }
    let (config, varmap) = deployed.context("no binding model trained")?;
    let metrics = json!({
        "protocol": "GPSite train files (10 ligands) + GraphPPIS Train_335 (PPI) merged by sequence, loss only on the ligand columns a protein is labelled for; 10% of proteins for early stopping and per-ligand MCC thresholds; test on each GPSite test file and GraphPPIS Test_60",
        "graph": options,
        "variants": results,
    });
    Ok(TaskOutput::binding(config, varmap, metrics))
}
