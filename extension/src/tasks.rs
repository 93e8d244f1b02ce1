//! Task predictions: function terms, interaction probability and binding sites, from the task
//! heads stored in a model directory. Same markings and error rules as the embedding functions.

use pgrx::prelude::*;
use plm_model::serve::{Output, Task};

use crate::errors::OrRaise;
use crate::inference::{run, unexpected};

fn non_negative(value: i32, what: &str) -> usize {
    usize::try_from(value)
        .map_err(|_| {
            plm_model::PlmError::InvalidArgument(format!(
                "{what} must be zero or more, got {value}"
            ))
        })
        .or_raise()
}

fn threshold(value: Option<f32>, default: f32) -> f32 {
    let t = value.unwrap_or(default);
    if !(0.0..=1.0).contains(&t) || t.is_nan() {
        crate::errors::raise(plm_model::PlmError::InvalidArgument(format!(
            "threshold must be between 0 and 1, got {t}"
        )));
    }
    t
}

/// Predicted function terms of a protein: EC numbers (`ontology => 'ec'`) or GO terms
/// (`'go_mf'`, `'go_bp'`, `'go_cc'`), best first.
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_function(
    sequence: Option<&str>,
    ontology: default!(Option<&str>, "'ec'"),
    top_k: default!(Option<i32>, "5"),
    min_score: default!(Option<f32>, "0.0"),
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(term, String), name!(name, String), name!(score, f32))> {
    let Some(sequence) = sequence else {
        return TableIterator::new(Vec::new());
    };
    let top_k = non_negative(top_k.unwrap_or(5), "top_k");
    let min_score = threshold(min_score, 0.0);
    let task = Task::Function {
        sequence: sequence.to_string(),
        ontology: ontology.unwrap_or("ec").to_string(),
        top_k: u32::try_from(top_k).unwrap_or(u32::MAX),
        min_score,
    };
    let rows = match run(model, task) {
        Output::Functions(f) => f,
        other => unexpected(&other),
    };
    TableIterator::new(rows.into_iter().map(|p| (p.term, p.name, p.score)))
}

/// Probability that two proteins interact; symmetric in its two arguments.
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_ppi(
    sequence_a: Option<&str>,
    sequence_b: Option<&str>,
    model: default!(Option<&str>, "NULL"),
) -> Option<f32> {
    let (a, b) = (sequence_a?, sequence_b?);
    let task = Task::Ppi {
        pairs: vec![(a.to_string(), b.to_string())],
    };
    match run(model, task) {
        Output::Scores(mut s) => s.pop(),
        other => unexpected(&other),
    }
}

/// Per-residue binding-site scores at or above `threshold` for one ligand type (NULL: all),
/// over the residue graph of predicted contacts or of a PDB/mmCIF `structure` (first protein
/// chain, or `chain`).
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_binding_sites(
    sequence: Option<&str>,
    ligand: default!(Option<&str>, "NULL"),
    threshold: default!(Option<f32>, "0.5"),
    structure: default!(Option<&str>, "NULL"),
    model: default!(Option<&str>, "NULL"),
    chain: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(residue, String),
        name!(ligand, String),
        name!(score, f32),
    ),
> {
    let Some(sequence) = sequence else {
        return TableIterator::new(Vec::new());
    };
    let threshold = self::threshold(threshold, 0.5);
    let task = Task::BindingSites {
        sequence: sequence.to_string(),
        ligand: ligand.map(str::to_string),
        threshold,
        structure: structure.map(str::to_string),
        chain: chain.map(str::to_string),
    };
    let rows = match run(model, task) {
        Output::Sites(s) => s,
        other => unexpected(&other),
    };
    TableIterator::new(
        rows.into_iter()
            .map(|p| (p.position as i32, p.residue.to_string(), p.ligand, p.score)),
    )
}
