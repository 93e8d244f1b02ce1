//! `plm-train reference`: builds the labelled reference sets that homology transfer searches
//! (`models/reference/*.plmref`: function terms, interacting pairs, binding residues) from the
//! shared data, deterministically: the same input files give the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use plm_model::heads::LIGANDS;
use plm_model::homology::{
    binding_file, function_file, interaction_file, BindingReference, FunctionReference,
    InteractionReference,
};

use crate::finetune::binding::label_files;
use crate::finetune::ppi::first_word;
use crate::taskdata::{self, GoGraph, LabeledProtein, ResidueLabels, GO_ROOTS};

/// Arguments of `plm-train reference`.
#[derive(Debug, Clone, Args)]
pub struct ReferenceArgs {
    /// The shared data directory (`function/`).
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory (created).
    #[arg(long, default_value = "models/reference")]
    pub out: PathBuf,
}

/// Labelled proteins of one function task, as a reference set is built from them.
pub struct FunctionSet {
    /// Term identifiers, sorted.
    pub terms: Vec<String>,
    /// Term names.
    pub names: Vec<String>,
    /// `(accession, sequence, label indices)`.
    pub proteins: Vec<(String, String, Vec<u32>)>,
}

impl FunctionSet {
    /// Indexes the labels of `proteins` (already propagated where that applies).
    pub fn new(
        proteins: &[(String, String, BTreeSet<String>)],
        name: impl Fn(&str) -> String,
    ) -> Self {
        let terms: Vec<String> = proteins
            .iter()
            .flat_map(|(_, _, l)| l.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<&str, u32> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let proteins = proteins
            .iter()
            .map(|(id, s, l)| {
                (
                    id.clone(),
                    s.clone(),
                    l.iter().map(|t| index[t.as_str()]).collect(),
                )
            })
            .collect();
        Self {
            names: terms.iter().map(|t| name(t)).collect(),
            terms,
            proteins,
        }
    }

    /// The searchable reference set.
    pub fn build(&self, task: &str, source: &str) -> Result<FunctionReference> {
        Ok(FunctionReference::build(
            task,
            source,
            self.terms.clone(),
            self.names.clone(),
            self.proteins.clone(),
        )?)
    }
}

/// GO annotations propagated up the graph, roots removed (as the GO heads are trained).
pub fn propagated_go(proteins: &[LabeledProtein], graph: &GoGraph) -> Vec<BTreeSet<String>> {
    let roots: HashSet<&str> = GO_ROOTS.into_iter().collect();
    proteins
        .iter()
        .map(|p| {
            graph
                .propagate(&p.labels)
                .into_iter()
                .filter(|t| !roots.contains(t.as_str()))
                .collect()
        })
        .collect()
}

/// Builds every reference set into `args.out`.
pub fn run(args: &ReferenceArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ec = taskdata::read_ec(&args.data.join("function/ec/train.tsv"))?;
    let rows: Vec<_> = ec
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                p.sequence.clone(),
                p.labels.iter().cloned().collect(),
            )
        })
        .collect();
    write(
        &args.out,
        "ec",
        "CLEAN split10 (function/ec/train.tsv): Swiss-Prot enzymes with EC numbers",
        &FunctionSet::new(&rows, |_| String::new()),
    )?;
    let graph = crate::finetune::function::read_go_graph(&args.data)?;
    for ontology in ["mf", "bp", "cc"] {
        let proteins =
            taskdata::read_go(&args.data.join(format!("function/go/{ontology}_18000.tsv")))?;
        let labels = propagated_go(&proteins, &graph);
        let rows: Vec<_> = proteins
            .iter()
            .zip(labels)
            .filter(|(_, l)| !l.is_empty())
            .map(|(p, l)| (p.id.clone(), p.sequence.clone(), l))
            .collect();
        write(
            &args.out,
            &format!("go_{ontology}"),
            &format!("metastudent-data {ontology}_18000.tsv: UniProt-GOA annotations (January 2014) propagated up go_graph.tsv, roots removed"),
            &FunctionSet::new(&rows, |t| graph.name(t)),
        )?;
    }
    let path = args.out.join(interaction_file());
    let interactions = interaction_set(&args.data)?;
    interactions.save(&path)?;
    report(
        &path,
        &format!(
            "{} proteins, {} interacting pairs",
            interactions.len(),
            interactions.pair_count()
        ),
    )?;
    let path = args.out.join(binding_file());
    let binding = binding_set(&args.data)?;
    binding.save(&path)?;
    report(&path, &format!("{} chains", binding.len()))?;
    Ok(())
}

fn write(out: &Path, task: &str, source: &str, set: &FunctionSet) -> Result<()> {
    let path = out.join(function_file(task));
    set.build(task, source)?.save(&path)?;
    report(
        &path,
        &format!("{} proteins, {} terms", set.proteins.len(), set.terms.len()),
    )
}

fn report(path: &Path, what: &str) -> Result<()> {
    let bytes = std::fs::metadata(path)?.len();
    println!("{}: {what}, {:.1} MB", path.display(), bytes as f64 / 1e6);
    Ok(())
}

/// The interaction files under `ppi/`: pairs, then sequences.
pub const INTERACTION_FILES: [(&str, &str); 4] = [
    ("dscript_yeast_pairs.tsv", "dscript_yeast.fasta"),
    ("guo_yeast_pairs.tsv", "guo_yeast_sequences.tsv"),
    ("mcaps_human_pairs.tsv", "mcaps_human.fasta"),
    ("mcaps_fly_pairs.tsv", "mcaps_fly.fasta"),
];

/// One labelled pair of an interaction file.
#[derive(Debug, Clone)]
pub struct LabelledPair {
    /// First protein: identifier and sequence.
    pub a: (String, String),
    /// Second protein: identifier and sequence.
    pub b: (String, String),
    /// Whether the two interact.
    pub positive: bool,
}

/// The labelled pairs of one interaction file, with their sequences (pairs whose sequence is
/// missing are dropped).
pub fn read_interactions(data: &Path, pairs: &str, sequences: &str) -> Result<Vec<LabelledPair>> {
    let dir = data.join("ppi");
    let seqs = first_word(taskdata::read_sequences(&dir.join(sequences))?);
    Ok(taskdata::read_pairs(&dir.join(pairs))?
        .into_iter()
        .filter_map(|(a, b, positive)| {
            Some(LabelledPair {
                a: (a.clone(), seqs.get(&a)?.clone()),
                b: (b.clone(), seqs.get(&b)?.clone()),
                positive,
            })
        })
        .collect())
}

/// Interacting pairs being gathered into an [`InteractionReference`]; proteins with the same
/// sequence are one protein.
#[derive(Debug, Default, Clone)]
pub struct PairSet {
    proteins: Vec<(String, String)>,
    by_sequence: HashMap<String, u32>,
    pairs: Vec<(u32, u32)>,
}

impl PairSet {
    fn protein(&mut self, id: &str, sequence: &str) -> u32 {
        if let Some(&i) = self.by_sequence.get(sequence) {
            return i;
        }
        let i = self.proteins.len() as u32;
        self.proteins.push((id.to_string(), sequence.to_string()));
        self.by_sequence.insert(sequence.to_string(), i);
        i
    }

    /// The positive pairs of interaction `files` (pairs file, sequences file) under `ppi/`.
    pub fn positives_of(data: &Path, files: &[(&str, &str)]) -> Result<Self> {
        let mut set = PairSet::default();
        for (pairs, sequences) in files {
            for p in read_interactions(data, pairs, sequences)? {
                if p.positive {
                    set.add(&p.a.0, &p.a.1, &p.b.0, &p.b.1);
                }
            }
        }
        Ok(set)
    }

    /// Adds one interacting pair.
    pub fn add(&mut self, id_a: &str, seq_a: &str, id_b: &str, seq_b: &str) {
        let (a, b) = (self.protein(id_a, seq_a), self.protein(id_b, seq_b));
        self.pairs.push((a, b));
    }

    /// The proteins, `(accession, sequence)`.
    pub fn proteins(&self) -> &[(String, String)] {
        &self.proteins
    }

    /// The interacting pairs, as indices into [`PairSet::proteins`].
    pub fn pairs(&self) -> &[(u32, u32)] {
        &self.pairs
    }

    /// The searchable set.
    pub fn build(&self, source: &str) -> Result<InteractionReference> {
        Ok(InteractionReference::build(
            source,
            &self.proteins,
            &self.pairs,
        )?)
    }
}

/// A chain of a [`BindingSet`]: accession, sequence, binding positions by ligand index.
pub type BindingChain = (String, String, BTreeMap<u16, BTreeSet<u32>>);

/// Chains with binding residues being gathered into a [`BindingReference`]; chains with the
/// same sequence are merged (their labels for different ligands combined).
#[derive(Debug, Default, Clone)]
pub struct BindingSet {
    chains: Vec<BindingChain>,
    by_sequence: HashMap<String, usize>,
}

impl BindingSet {
    /// Adds the labels of `chain` for ligand `ligand` (an index into [`LIGANDS`]).
    pub fn add(&mut self, chain: &ResidueLabels, ligand: usize) {
        let i = *self
            .by_sequence
            .entry(chain.sequence.clone())
            .or_insert_with(|| {
                self.chains
                    .push((chain.id.clone(), chain.sequence.clone(), BTreeMap::new()));
                self.chains.len() - 1
            });
        let positions = self.chains[i].2.entry(ligand as u16).or_default();
        positions.extend(
            chain
                .labels
                .iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(p, _)| p as u32),
        );
    }

    /// The chains.
    pub fn chains(&self) -> &[BindingChain] {
        &self.chains
    }

    /// The searchable set.
    pub fn build(&self, source: &str) -> Result<BindingReference> {
        Ok(BindingReference::build(
            source,
            LIGANDS.iter().map(|l| l.to_string()).collect(),
            self.chains
                .iter()
                .map(|(id, s, l)| {
                    (
                        id.clone(),
                        s.clone(),
                        l.iter()
                            .map(|(k, p)| (*k, p.iter().copied().collect()))
                            .collect(),
                    )
                })
                .collect(),
        )?)
    }
}

/// The interaction set of every positive pair of [`INTERACTION_FILES`].
fn interaction_set(data: &Path) -> Result<InteractionReference> {
    PairSet::positives_of(data, &INTERACTION_FILES)?.build("D-SCRIPT yeast (STRING v11), Guo 2008 yeast core set (DIP), MCAPS human and fly subsets of D-SCRIPT: positive pairs")
}

/// The binding set of every training chain of every ligand.
fn binding_set(data: &Path) -> Result<BindingReference> {
    let mut set = BindingSet::default();
    for (k, ligand) in LIGANDS.iter().enumerate() {
        let (train, _) = label_files(ligand);
        for chain in taskdata::read_residue_labels(&data.join(train))? {
            set.add(&chain, k);
        }
    }
    set.build("GPSite training files (BioLiP: DNA, RNA, PEP, PRO, ATP, HEM, ZN, CA, MG, MN) and GraphPPIS Train_335 (PPI)")
}
