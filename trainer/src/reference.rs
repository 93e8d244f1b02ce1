//! `plm-train reference`: builds the labelled reference sets that homology transfer searches
//! (`models/reference/function_<ontology>.plmref`) from the shared data, deterministically:
//! the same input files give the same bytes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use plm_model::homology::{function_file, FunctionReference};

use crate::taskdata::{self, GoGraph, LabeledProtein, GO_ROOTS};

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
    Ok(())
}

fn write(out: &Path, task: &str, source: &str, set: &FunctionSet) -> Result<()> {
    let path = out.join(function_file(task));
    set.build(task, source)?.save(&path)?;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "{}: {} proteins, {} terms, {:.1} MB",
        path.display(),
        set.proteins.len(),
        set.terms.len(),
        bytes as f64 / 1e6
    );
    Ok(())
}
