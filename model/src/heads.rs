//! Task heads stored beside a language model: function (EC, GO), protein–protein
//! interaction and per-residue binding sites.
//!
//! A checkpoint directory holds them as `heads.json` (configuration, label vocabularies, term
//! names, evaluation metrics) and `heads.safetensors` (weights, prefixed `function.{ontology}.`,
//! `ppi.`, `binding.`), so one directory is one deployable model.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Result as CandleResult, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::checkpoint::read_json;
use crate::error::{PlmError, Result};
use crate::gnn::{dropout, EdgeIndex, GnnConfig, GraphEncoder};
use crate::graph::GraphOptions;
use crate::homology::Blend;
use crate::neighbours::{NeighbourHead, NeighbourHeadConfig};

/// File names of the heads inside a checkpoint directory.
pub mod files {
    /// Configuration, vocabularies and metrics.
    pub const CONFIG: &str = "heads.json";
    /// Weights.
    pub const WEIGHTS: &str = "heads.safetensors";
}

/// The ontologies a function head can predict.
pub const ONTOLOGIES: [&str; 4] = ["ec", "go_mf", "go_bp", "go_cc"];

/// Key of a ligand's homology blend in `heads.json` (`binding_ZN`, ...).
pub fn binding_blend_key(ligand: &str) -> String {
    format!("binding_{ligand}")
}

/// Binding-site ligand types: the ten GPSite ligands and the protein–protein interface of
/// GraphPPIS (`PPI`).
pub const LIGANDS: [&str; 11] = [
    "DNA", "RNA", "PEP", "PRO", "ATP", "HEM", "ZN", "CA", "MG", "MN", "PPI",
];

/// The terms a function head scores (stored flat in the head's `heads.json` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermVocabulary {
    /// Term identifiers (EC numbers or GO ids), one per output.
    pub labels: Vec<String>,
    /// Human-readable term names, parallel to `labels` (may be empty strings).
    pub names: Vec<String>,
    /// For GO: indices of each label's ancestors within `labels`, so that a term never scores
    /// below any of its descendants (the true-path rule).
    #[serde(default)]
    pub ancestors: Vec<Vec<u32>>,
}

/// A multi-label function head: an MLP over the pooled multi-scale embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionHeadConfig {
    /// Width of the input features.
    pub input_dim: usize,
    /// Width of the hidden layer.
    pub hidden: usize,
    /// Dropout during training.
    pub dropout: f32,
    /// The terms scored, one per output.
    #[serde(flatten)]
    pub terms: TermVocabulary,
}

/// MLP function head.
#[derive(Debug, Clone)]
pub struct FunctionHead {
    hidden: Linear,
    output: Linear,
    dropout: f32,
}

impl FunctionHead {
    /// Loads `hidden` and `output` linear layers.
    pub fn load(vb: VarBuilder, config: &FunctionHeadConfig) -> CandleResult<Self> {
        Ok(Self {
            hidden: linear(config.input_dim, config.hidden, vb.pp("hidden"))?,
            output: linear(config.hidden, config.terms.labels.len(), vb.pp("output"))?,
            dropout: config.dropout,
        })
    }

    /// Logits `[B, labels]` from pooled features `[B, input_dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let h = self.hidden.forward(x)?.gelu_erf()?;
        self.output.forward(&dropout(&h, self.dropout, train)?)
    }
}

/// The pair model for protein–protein interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PpiHeadConfig {
    /// Width of each protein's pooled features.
    pub input_dim: usize,
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Dropout during training.
    pub dropout: f32,
}

/// Symmetric pair model: `f(a, b) = g([ea ⊙ eb, |ea − eb|, ea + eb])` with a shared encoder
/// `e`, so swapping the two proteins gives exactly the same value.
#[derive(Debug, Clone)]
pub struct PpiHead {
    encoder: Linear,
    combine: Linear,
    output: Linear,
    dropout: f32,
}

impl PpiHead {
    /// Loads `encoder`, `combine` and `output`.
    pub fn load(vb: VarBuilder, config: &PpiHeadConfig) -> CandleResult<Self> {
        Ok(Self {
            encoder: linear(config.input_dim, config.hidden, vb.pp("encoder"))?,
            combine: linear(3 * config.hidden, config.hidden, vb.pp("combine"))?,
            output: linear(config.hidden, 1, vb.pp("output"))?,
            dropout: config.dropout,
        })
    }

    /// Interaction logits `[B]` for pairs of pooled features `[B, input_dim]`.
    pub fn forward(&self, a: &Tensor, b: &Tensor, train: bool) -> CandleResult<Tensor> {
        let ea = self.encoder.forward(a)?.gelu_erf()?;
        let eb = self.encoder.forward(b)?.gelu_erf()?;
        let pair = Tensor::cat(
            &[(&ea * &eb)?, (&ea - &eb)?.abs()?, (&ea + &eb)?],
            D::Minus1,
        )?;
        let h = self.combine.forward(&pair)?.gelu_erf()?;
        self.output
            .forward(&dropout(&h, self.dropout, train)?)?
            .squeeze(D::Minus1)
    }
}

/// The per-residue binding-site model over the residue graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingHeadConfig {
    /// Width of the per-residue input features.
    pub input_dim: usize,
    /// Ligand types, one output each (a subset of [`LIGANDS`]).
    pub ligands: Vec<String>,
    /// Message-passing layers (0 layers: a per-residue MLP).
    pub gnn: GnnConfig,
    /// How the residue graph is built.
    pub graph: GraphOptions,
    /// Dropout during training.
    pub dropout: f32,
}

/// Binding-site head: input projection, GNN layers, per-ligand output.
#[derive(Debug, Clone)]
pub struct BindingHead {
    input: Linear,
    encoder: GraphEncoder,
    output: Linear,
    dropout: f32,
}

impl BindingHead {
    /// Loads `input`, `gnn.layers.*` and `output`.
    pub fn load(vb: VarBuilder, config: &BindingHeadConfig) -> CandleResult<Self> {
        Ok(Self {
            input: linear(config.input_dim, config.gnn.hidden, vb.pp("input"))?,
            encoder: GraphEncoder::load(vb.pp("gnn"), &config.gnn)?,
            output: linear(config.gnn.hidden, config.ligands.len(), vb.pp("output"))?,
            dropout: config.dropout,
        })
    }

    /// Logits `[N, ligands]` for the residues `[N, input_dim]` of a graph batch.
    pub fn forward(&self, x: &Tensor, edges: &EdgeIndex, train: bool) -> CandleResult<Tensor> {
        let h = self
            .input
            .forward(&dropout(x, self.dropout, train)?)?
            .relu()?;
        let h = self.encoder.forward(&h, edges)?;
        self.output.forward(&dropout(&h, self.dropout, train)?)
    }
}

/// `heads.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeadsConfig {
    /// Format version.
    pub version: u32,
    /// Language-model layers whose hidden states are concatenated as features (multi-scale);
    /// pooled features are their mean over residues.
    pub feature_layers: Vec<i64>,
    /// Function heads by ontology (`ec`, `go_mf`, `go_bp`, `go_cc`).
    #[serde(default)]
    pub function: BTreeMap<String, FunctionHeadConfig>,
    /// Interaction head.
    #[serde(default)]
    pub ppi: Option<PpiHeadConfig>,
    /// Binding-site head.
    #[serde(default)]
    pub binding: Option<BindingHeadConfig>,
    /// Nearest-neighbour function heads by ontology, used where they measured better than
    /// the MLP (an ontology has one or the other).
    #[serde(default)]
    pub neighbours: BTreeMap<String, NeighbourHeadConfig>,
    /// How homology transfer is blended with each function head, by ontology, as fitted on
    /// validation proteins by `plm-train homology` (absent: [`Blend::default`]).
    #[serde(default)]
    pub blend: BTreeMap<String, Blend>,
    /// The protein-interface prior blended with the binding head when a structure is given,
    /// as fitted by `plm-train interface-prior` (absent: the head alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prior: Option<crate::surface::InterfacePrior>,
    /// Evaluation results and training provenance.
    #[serde(default)]
    pub metrics: serde_json::Value,
}

impl HeadsConfig {
    /// Writes `heads.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        // Compact: label lists and neighbour banks make the pretty form several times larger,
        // and the model directory has a size budget.
        let path = dir.join(files::CONFIG);
        let text = serde_json::to_string(self).map_err(|e| PlmError::bad_file(&path, e))?;
        std::fs::write(&path, text + "\n").map_err(|e| PlmError::Io { path, source: e })
    }

    /// The blend of homology transfer and the head of `ontology`.
    pub fn blend_for(&self, key: &str) -> Blend {
        self.blend
            .get(key)
            .copied()
            .filter(|b| (0.0..=1.0).contains(&b.alpha) && (0.0..=64.0).contains(&b.sharpness))
            .unwrap_or_default()
    }

    /// The interface prior, when present and well-formed.
    pub fn interface_prior(&self) -> Option<&crate::surface::InterfacePrior> {
        self.interface_prior.as_ref().filter(|p| p.is_valid())
    }

    /// Names of the heads present, as recorded in the manifest.
    pub fn head_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .function
            .keys()
            .chain(self.neighbours.keys())
            .cloned()
            .collect();
        names.sort();
        if self.ppi.is_some() {
            names.push("ppi".into());
        }
        if self.binding.is_some() {
            names.push("binding".into());
        }
        names
    }
}

/// All task heads of a checkpoint, loaded.
#[derive(Debug, Clone)]
pub struct TaskHeads {
    /// The configuration they were built from.
    pub config: HeadsConfig,
    /// Function heads by ontology.
    pub function: BTreeMap<String, FunctionHead>,
    /// Interaction head.
    pub ppi: Option<PpiHead>,
    /// Binding-site head.
    pub binding: Option<BindingHead>,
    /// Nearest-neighbour function heads by ontology.
    pub neighbours: BTreeMap<String, NeighbourHead>,
}

impl TaskHeads {
    /// Builds every configured head from `vb` (a var map while training, the stored weights at
    /// inference).
    pub fn load(vb: VarBuilder, config: &HeadsConfig) -> CandleResult<Self> {
        let function = config
            .function
            .iter()
            .map(|(name, c)| {
                Ok((
                    name.clone(),
                    FunctionHead::load(vb.pp(format!("function.{name}")), c)?,
                ))
            })
            .collect::<CandleResult<_>>()?;
        let ppi = config
            .ppi
            .as_ref()
            .map(|c| PpiHead::load(vb.pp("ppi"), c))
            .transpose()?;
        let binding = config
            .binding
            .as_ref()
            .map(|c| BindingHead::load(vb.pp("binding"), c))
            .transpose()?;
        let neighbours = config
            .neighbours
            .iter()
            .map(|(name, c)| {
                Ok((
                    name.clone(),
                    NeighbourHead::load(vb.pp(format!("neighbours.{name}")), c)?,
                ))
            })
            .collect::<CandleResult<_>>()?;
        Ok(Self {
            config: config.clone(),
            function,
            ppi,
            binding,
            neighbours,
        })
    }

    /// Loads the heads of a checkpoint directory, or `None` when it has none.
    pub fn open(dir: &Path, device: &Device) -> Result<Option<Self>> {
        let config_path = dir.join(files::CONFIG);
        if !config_path.is_file() {
            return Ok(None);
        }
        let config: HeadsConfig = read_json(&config_path)?;
        let weights = dir.join(files::WEIGHTS);
        if !weights.is_file() {
            return Err(PlmError::MissingFile {
                path: weights,
                what: "task-head weights (heads.json is present)".into(),
            });
        }
        let data = std::fs::read(&weights).map_err(|e| PlmError::Io {
            path: weights.clone(),
            source: e,
        })?;
        let vb = VarBuilder::from_buffered_safetensors(data, DType::F32, device)
            .map_err(|e| PlmError::bad_file(&weights, e))?;
        let heads = Self::load(vb, &config).map_err(|e| PlmError::bad_file(&weights, e))?;
        Ok(Some(heads))
    }

    /// Writes `heads.json` and `heads.safetensors` into `dir`.
    pub fn save(
        dir: &Path,
        config: &HeadsConfig,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        let weights = dir.join(files::WEIGHTS);
        candle_core::safetensors::save(tensors, &weights)
            .map_err(|e| PlmError::bad_file(&weights, e))?;
        config.save(dir)
    }

    /// The function head of an ontology, with its configuration.
    pub fn function_head(&self, ontology: &str) -> Option<(&FunctionHead, &FunctionHeadConfig)> {
        Some((
            self.function.get(ontology)?,
            self.config.function.get(ontology)?,
        ))
    }
}

/// Applies the true-path rule to per-label scores: each term scores at least as much as its
/// best-scoring descendant.
pub fn propagate_up(scores: &mut [f32], ancestors: &[Vec<u32>]) {
    if ancestors.len() != scores.len() {
        return;
    }
    let original = scores.to_vec();
    for (label, parents) in ancestors.iter().enumerate() {
        for &p in parents {
            let p = p as usize;
            if p < scores.len() && original[label] > scores[p] {
                scores[p] = original[label];
            }
        }
    }
}

/// Sigmoid of a slice.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnn::GnnKind;
    use candle_nn::VarMap;

    fn config() -> HeadsConfig {
        let mut function = BTreeMap::new();
        function.insert(
            "ec".to_string(),
            FunctionHeadConfig {
                input_dim: 6,
                hidden: 5,
                dropout: 0.1,
                terms: TermVocabulary {
                    labels: vec!["1.1.1.1".into(), "2.7.11.1".into()],
                    names: vec![String::new(), String::new()],
                    ancestors: vec![],
                },
            },
        );
        HeadsConfig {
            version: 1,
            feature_layers: vec![-1],
            function,
            ppi: Some(PpiHeadConfig {
                input_dim: 6,
                hidden: 4,
                dropout: 0.0,
            }),
            binding: Some(BindingHeadConfig {
                input_dim: 6,
                ligands: vec!["DNA".into(), "ZN".into()],
                gnn: GnnConfig {
                    kind: GnnKind::Gated,
                    layers: 1,
                    hidden: 4,
                },
                graph: GraphOptions::default(),
                dropout: 0.0,
            }),
            neighbours: BTreeMap::from([(
                "go_cc".to_string(),
                NeighbourHeadConfig {
                    input_dim: 6,
                    k: 2,
                    terms: TermVocabulary {
                        labels: vec!["GO:1".into(), "GO:2".into()],
                        names: vec!["one".into(), "two".into()],
                        ancestors: vec![],
                    },
                    entry_labels: vec![vec![0], vec![1], vec![0, 1]],
                    projection: None,
                },
            )]),
            blend: Default::default(),
            interface_prior: None,
            metrics: serde_json::Value::Null,
        }
    }

    #[test]
    fn pair_model_is_exactly_symmetric() {
        let map = VarMap::new();
        let heads = TaskHeads::load(
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
            &config(),
        )
        .unwrap();
        let ppi = heads.ppi.unwrap();
        let a = Tensor::randn(0f32, 1.0, (7, 6), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (7, 6), &Device::Cpu).unwrap();
        let ab = ppi
            .forward(&a, &b, false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ba = ppi
            .forward(&b, &a, false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), 7);
    }

    #[test]
    fn heads_round_trip_through_a_directory() {
        let map = VarMap::new();
        let cfg = config();
        let heads = TaskHeads::load(
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut tensors: std::collections::HashMap<String, Tensor> = map
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        // The neighbour bank is stored as f16 and read back as f32.
        let bank: Vec<f32> = (0..18).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        tensors.insert(
            "neighbours.go_cc.bank".into(),
            Tensor::from_vec(bank.clone(), (3, 6), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        );
        TaskHeads::save(dir.path(), &cfg, &tensors).unwrap();
        let loaded = TaskHeads::open(dir.path(), &Device::Cpu).unwrap().unwrap();
        assert_eq!(
            loaded.config.head_names(),
            vec!["ec", "go_cc", "ppi", "binding"]
        );
        // A query equal to entry 1 (label 1) scores label 1 at similarity 1.
        let s = loaded.neighbours["go_cc"].scores(&bank[6..12]).unwrap();
        assert!((s[1] - 1.0).abs() < 1e-6, "{s:?}");
        let x = Tensor::randn(0f32, 1.0, (3, 6), &Device::Cpu).unwrap();
        let before = heads.function["ec"].forward(&x, false).unwrap();
        let after = loaded.function["ec"].forward(&x, false).unwrap();
        assert_eq!(crate::test_util::max_abs_diff(&before, &after), 0.0);
        // Missing weights next to a config is an error naming the file.
        std::fs::remove_file(dir.path().join(files::WEIGHTS)).unwrap();
        let err = TaskHeads::open(dir.path(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("heads.safetensors"), "{err}");
        // No heads at all is not an error.
        let empty = tempfile::tempdir().unwrap();
        assert!(TaskHeads::open(empty.path(), &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn true_path_rule_lifts_ancestors() {
        let mut s = vec![0.2, 0.9, 0.5];
        // label 1's ancestors: 0; label 2's ancestors: 0.
        propagate_up(&mut s, &[vec![], vec![0], vec![0]]);
        assert_eq!(s, vec![0.9, 0.9, 0.5]);
    }
}
