//! Task predictions: function terms, interaction probability and binding sites, from the task
//! heads stored in a model directory. Same two forms and markings as the embedding functions.

use pgrx::prelude::*;
use plm_model::homology::Method;
use plm_serve::{Output, Task};

use crate::errors::{raise, OrRaise};
use crate::inference::{run, unexpected};
use crate::model_name::{given, ModelName};

fn non_negative(value: i32, what: &str) -> usize {
    usize::try_from(value)
        .map_err(|_| {
            plm_model::PlmError::InvalidArgument(format!(
                "{what} must be zero or more, got {value}"
            ))
        })
        .or_raise()
}

/// A score threshold between 0 and 1 (NULL: `default`).
pub fn threshold(value: Option<f32>, default: f32) -> f32 {
    let t = value.unwrap_or(default);
    if !(0.0..=1.0).contains(&t) || t.is_nan() {
        raise(plm_model::PlmError::InvalidArgument(format!(
            "threshold must be between 0 and 1, got {t}"
        )));
    }
    t
}

type FunctionRows = TableIterator<
    'static,
    (
        name!(term, String),
        name!(name, String),
        name!(score, f32),
        name!(evidence, String),
        name!(template, Option<String>),
        name!(template_identity, Option<f32>),
    ),
>;

/// Arguments of `plm_function` after the sequence and model.
struct FunctionArgs<'a> {
    ontology: Option<&'a str>,
    top_k: Option<i32>,
    min_score: Option<f32>,
    method: Option<&'a str>,
}

fn function(model: Option<&str>, sequence: &str, args: FunctionArgs<'_>) -> FunctionRows {
    let top_k = non_negative(args.top_k.unwrap_or(5), "top_k");
    let min_score = threshold(args.min_score, 0.0);
    let method = method(args.method);
    let task = Task::Function {
        sequence: sequence.to_string(),
        ontology: args.ontology.unwrap_or("ec").to_string(),
        top_k: u32::try_from(top_k).unwrap_or(u32::MAX),
        min_score,
        method,
    };
    let rows = match run(model, task) {
        Output::Functions(f) => f,
        other => unexpected(&other),
    };
    TableIterator::new(rows.into_iter().map(|p| {
        (
            p.term,
            p.name,
            p.score,
            p.evidence,
            p.template,
            p.template_identity,
        )
    }))
}

/// Predicted function terms of a protein with the default model: EC numbers
/// (`ontology => 'ec'`) or GO terms (`'go_mf'`, `'go_bp'`, `'go_cc'`), best first.
///
/// `method`: `'combined'` (homology transfer from the shipped reference set blended with the
/// model head; the head alone where no annotated protein is similar), `'model'` or
/// `'homology'`. Each row says which evidence supports the term and, for homology, the most
/// similar annotated protein carrying it and its sequence identity.
// pgrx generates the SQL signature from the spelled-out return type (an alias breaks it).
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_function")]
fn plm_function_default_model(
    sequence: Option<&str>,
    ontology: default!(Option<&str>, "'ec'"),
    top_k: default!(Option<i32>, "5"),
    min_score: default!(Option<f32>, "0.0"),
    method: default!(Option<&str>, "'combined'"),
) -> TableIterator<
    'static,
    (
        name!(term, String),
        name!(name, String),
        name!(score, f32),
        name!(evidence, String),
        name!(template, Option<String>),
        name!(template_identity, Option<f32>),
    ),
> {
    let args = FunctionArgs {
        ontology,
        top_k,
        min_score,
        method,
    };
    match sequence {
        Some(s) => function(None, s, args),
        None => TableIterator::new(Vec::new()),
    }
}

/// Predicted function terms of a protein with `model`.
// pgrx generates the SQL signature from the spelled-out return type (an alias breaks it).
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_function")]
fn plm_function_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    ontology: default!(Option<&str>, "'ec'"),
    top_k: default!(Option<i32>, "5"),
    min_score: default!(Option<f32>, "0.0"),
    method: default!(Option<&str>, "'combined'"),
) -> TableIterator<
    'static,
    (
        name!(term, String),
        name!(name, String),
        name!(score, f32),
        name!(evidence, String),
        name!(template, Option<String>),
        name!(template_identity, Option<f32>),
    ),
> {
    let args = FunctionArgs {
        ontology,
        top_k,
        min_score,
        method,
    };
    match sequence {
        Some(s) => function(Some(&given(model)), s, args),
        None => TableIterator::new(Vec::new()),
    }
}

fn method(text: Option<&str>) -> Method {
    Method::parse(text.unwrap_or("combined")).or_raise()
}

fn ppi(model: Option<&str>, a: &str, b: &str, method_text: Option<&str>) -> Option<f32> {
    let task = Task::Ppi {
        pairs: vec![(a.to_string(), b.to_string())],
        method: method(method_text),
    };
    match run(model, task) {
        Output::Scores(mut s) => s.pop(),
        other => unexpected(&other),
    }
}

/// Probability that two proteins interact, with the default model; symmetric.
///
/// `method`: `'combined'` (interolog transfer from the shipped interaction reference set, where
/// homologs of both proteins are known, blended with the model's pair head; the head alone
/// otherwise), `'model'` or `'homology'` (0 where no homologous pair is known to interact).
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_ppi")]
fn plm_ppi_default_model(
    sequence_a: Option<&str>,
    sequence_b: Option<&str>,
    method: default!(Option<&str>, "'combined'"),
) -> Option<f32> {
    ppi(None, sequence_a?, sequence_b?, method)
}

/// Probability that two proteins interact, with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_ppi")]
fn plm_ppi_with_model(
    sequence_a: Option<&str>,
    sequence_b: Option<&str>,
    model: Option<ModelName>,
    method: default!(Option<&str>, "'combined'"),
) -> Option<f32> {
    let (a, b) = (sequence_a?, sequence_b?);
    ppi(Some(&given(model)), a, b, method)
}

fn binding_sites(
    model: Option<&str>,
    sequence: Option<&str>,
    ligand: Option<&str>,
    threshold: Option<f32>,
    structure: Option<&str>,
    chain: Option<&str>,
    method_text: Option<&str>,
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
        method: method(method_text),
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

/// Per-residue binding-site scores at or above `threshold` for one ligand type (NULL: all),
/// with the default model, over the residue graph of predicted contacts or of a PDB/mmCIF
/// `structure` (first protein chain, or `chain`).
///
/// `method`: `'combined'` (binding residues of similar annotated chains transferred through
/// their alignments, blended per residue with the graph network; the network alone on
/// residues no such chain covers), `'model'` or `'homology'`.
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_binding_sites")]
fn plm_binding_sites_default_model(
    sequence: Option<&str>,
    ligand: default!(Option<&str>, "NULL"),
    threshold: default!(Option<f32>, "0.5"),
    structure: default!(Option<&str>, "NULL"),
    chain: default!(Option<&str>, "NULL"),
    method: default!(Option<&str>, "'combined'"),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(residue, String),
        name!(ligand, String),
        name!(score, f32),
    ),
> {
    binding_sites(None, sequence, ligand, threshold, structure, chain, method)
}

/// Per-residue binding-site scores with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_binding_sites")]
fn plm_binding_sites_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    ligand: default!(Option<&str>, "NULL"),
    threshold: default!(Option<f32>, "0.5"),
    structure: default!(Option<&str>, "NULL"),
    chain: default!(Option<&str>, "NULL"),
    method: default!(Option<&str>, "'combined'"),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(residue, String),
        name!(ligand, String),
        name!(score, f32),
    ),
> {
    if sequence.is_none() {
        return TableIterator::new(Vec::new());
    }
    binding_sites(
        Some(&given(model)),
        sequence,
        ligand,
        threshold,
        structure,
        chain,
        method,
    )
}
