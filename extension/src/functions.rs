//! Prediction functions: embeddings and contacts.
//!
//! Every function has two forms (see `model_name`): without `model`, STABLE (it reads
//! `plm.default_model`), and with `model` right after the sequence, IMMUTABLE (a model name
//! resolves to a checkpoint whose weights fingerprint is fixed, see `registry`). Both are
//! PARALLEL SAFE with a high COST. They are not STRICT only because their optional arguments
//! default to NULL; a NULL sequence still gives NULL.

use pgrx::prelude::*;
use plm_model::{Matrix, Pooling};
use plm_serve::{Output, Task};

use crate::array2d::RealMatrix;
use crate::errors::OrRaise;
use crate::inference::{run, unexpected};
use crate::model_name::{given, ModelName};

fn vectors(model: Option<&str>, task: Task) -> Vec<Vec<f32>> {
    match run(model, task) {
        Output::Vectors(v) => v,
        other => unexpected(&other),
    }
}

fn matrices(model: Option<&str>, task: Task) -> Vec<Matrix> {
    match run(model, task) {
        Output::Matrices(m) => m,
        other => unexpected(&other),
    }
}

fn pooling(p: Option<&str>) -> Pooling {
    p.unwrap_or("mean").parse::<Pooling>().or_raise()
}

fn embed_one(
    model: Option<&str>,
    sequence: &str,
    layer: Option<i32>,
    pooling: Option<&str>,
) -> Option<Vec<f32>> {
    let task = Task::Embed {
        sequences: vec![sequence.to_string()],
        layer: layer.map(i64::from),
        pooling: self::pooling(pooling),
    };
    vectors(model, task).pop()
}

/// Pooled embedding of a protein sequence with the default model, from `layer` (NULL: the
/// last; negative: from the end).
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_embed")]
fn plm_embed_default_model(
    sequence: Option<&str>,
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
) -> Option<Vec<f32>> {
    embed_one(None, sequence?, layer, pooling)
}

/// Pooled embedding of a protein sequence with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_embed")]
fn plm_embed_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
) -> Option<Vec<f32>> {
    let sequence = sequence?;
    embed_one(Some(&given(model)), sequence, layer, pooling)
}

fn embed_many(
    model: Option<&str>,
    sequences: Option<Vec<Option<String>>>,
    layer: Option<i32>,
    pooling: Option<&str>,
) -> TableIterator<'static, (name!(ordinality, i32), name!(embedding, Option<Vec<f32>>))> {
    let Some(sequences) = sequences else {
        return TableIterator::new(Vec::new());
    };
    let pooling = self::pooling(pooling);
    let present: Vec<String> = sequences.iter().flatten().cloned().collect();
    let mut embedded = if present.is_empty() {
        Vec::new()
    } else {
        let task = Task::Embed {
            sequences: present,
            layer: layer.map(i64::from),
            pooling,
        };
        vectors(model, task)
    }
    .into_iter();
    let rows: Vec<(i32, Option<Vec<f32>>)> = sequences
        .iter()
        .enumerate()
        .map(|(i, s)| (i as i32 + 1, s.as_ref().and_then(|_| embedded.next())))
        .collect();
    TableIterator::new(rows)
}

/// Pooled embeddings of many sequences with the default model, in length-bucketed batches;
/// one row per array element, `ordinality` 1-based, NULL elements give NULL embeddings.
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_embed")]
fn plm_embed_batch_default_model(
    sequences: Option<Vec<Option<String>>>,
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
) -> TableIterator<'static, (name!(ordinality, i32), name!(embedding, Option<Vec<f32>>))> {
    embed_many(None, sequences, layer, pooling)
}

/// Pooled embeddings of many sequences with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_embed")]
fn plm_embed_batch_with_model(
    sequences: Option<Vec<Option<String>>>,
    model: Option<ModelName>,
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
) -> TableIterator<'static, (name!(ordinality, i32), name!(embedding, Option<Vec<f32>>))> {
    if sequences.is_none() {
        return TableIterator::new(Vec::new());
    }
    embed_many(Some(&given(model)), sequences, layer, pooling)
}

fn residues(
    model: Option<&str>,
    sequence: &str,
    layer: Option<i32>,
    layers: Option<Vec<Option<i32>>>,
) -> Option<RealMatrix> {
    if layer.is_some() && layers.as_ref().is_some_and(|l| !l.is_empty()) {
        crate::errors::raise(plm_model::PlmError::InvalidArgument(
            "give layer => or layers =>, not both".into(),
        ));
    }
    let chosen: Vec<Option<i64>> = match layers {
        Some(ls) if !ls.is_empty() => ls.into_iter().map(|l| l.map(i64::from)).collect(),
        _ => vec![layer.map(i64::from)],
    };
    let task = Task::EmbedResidues {
        sequences: vec![sequence.to_string()],
        layers: chosen,
    };
    let m = matrices(model, task).pop()?;
    Some(RealMatrix {
        rows: m.rows,
        cols: m.cols,
        data: m.data,
    })
}

/// Per-residue features with the default model, a 2-D `real[]` (residues × hidden). With
/// `layers`, the hidden states of those layers side by side (residues × hidden·len(layers)).
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_embed_residues")]
fn plm_embed_residues_default_model(
    sequence: Option<&str>,
    layer: default!(Option<i32>, "NULL"),
    layers: default!(Option<Vec<Option<i32>>>, "NULL"),
) -> Option<RealMatrix> {
    residues(None, sequence?, layer, layers)
}

/// Per-residue features with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_embed_residues")]
fn plm_embed_residues_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    layer: default!(Option<i32>, "NULL"),
    layers: default!(Option<Vec<Option<i32>>>, "NULL"),
) -> Option<RealMatrix> {
    let sequence = sequence?;
    residues(Some(&given(model)), sequence, layer, layers)
}

fn contacts(
    model: Option<&str>,
    sequence: Option<&str>,
    min_probability: Option<f32>,
) -> TableIterator<'static, (name!(i, i32), name!(j, i32), name!(probability, f32))> {
    let Some(sequence) = sequence else {
        return TableIterator::new(Vec::new());
    };
    let threshold = crate::tasks::threshold(min_probability, 0.5);
    let task = Task::Contacts {
        sequence: sequence.to_string(),
    };
    let Some(m) = matrices(model, task).pop() else {
        return TableIterator::new(Vec::new());
    };
    let mut rows = Vec::new();
    for i in 0..m.rows {
        for j in (i + 1)..m.cols {
            let p = m.data[i * m.cols + j];
            if p >= threshold {
                rows.push((i as i32 + 1, j as i32 + 1, p));
            }
        }
    }
    TableIterator::new(rows)
}

/// Predicted residue contacts with the default model, probability ≥ `min_probability`:
/// 1-based positions, i < j.
#[pg_extern(stable, parallel_safe, cost = 100000, name = "plm_contacts")]
fn plm_contacts_default_model(
    sequence: Option<&str>,
    min_probability: default!(Option<f32>, "0.5"),
) -> TableIterator<'static, (name!(i, i32), name!(j, i32), name!(probability, f32))> {
    contacts(None, sequence, min_probability)
}

/// Predicted residue contacts with `model`.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_contacts")]
fn plm_contacts_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    min_probability: default!(Option<f32>, "0.5"),
) -> TableIterator<'static, (name!(i, i32), name!(j, i32), name!(probability, f32))> {
    if sequence.is_none() {
        return TableIterator::new(Vec::new());
    }
    contacts(Some(&given(model)), sequence, min_probability)
}

/// One row per residue: position, letter, vector.
type ResidueRow = (i32, String, Vec<f32>);

fn residue_rows(
    model: Option<&str>,
    sequence: &str,
    layer: Option<i32>,
) -> TableIterator<'static, ResidueRow> {
    let Some(m) = residues(model, sequence, layer, None) else {
        return TableIterator::new(Vec::new());
    };
    let letters: Vec<char> = sequence.chars().collect();
    let rows: Vec<ResidueRow> = (0..m.rows)
        .map(|i| {
            let residue = letters.get(i).map(char::to_string).unwrap_or_default();
            (
                i as i32 + 1,
                residue,
                m.data[i * m.cols..(i + 1) * m.cols].to_vec(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Per-residue features with the default model as rows: 1-based position, residue letter and
/// that residue's vector (cast it to `halfvec` to store or index it).
#[pg_extern(stable, parallel_safe, cost = 100000)]
fn plm_residue_embeddings(
    sequence: Option<&str>,
    layer: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(residue, String),
        name!(embedding, Vec<f32>),
    ),
> {
    match sequence {
        Some(s) => residue_rows(None, s, layer),
        None => TableIterator::new(Vec::new()),
    }
}

/// Per-residue features with `model` as rows.
#[pg_extern(
    immutable,
    parallel_safe,
    cost = 100000,
    name = "plm_residue_embeddings"
)]
fn plm_residue_embeddings_with_model(
    sequence: Option<&str>,
    model: Option<ModelName>,
    layer: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(residue, String),
        name!(embedding, Vec<f32>),
    ),
> {
    match sequence {
        Some(s) => residue_rows(Some(&given(model)), s, layer),
        None => TableIterator::new(Vec::new()),
    }
}
