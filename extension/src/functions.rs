//! Prediction functions: embeddings and contacts.
//!
//! They are IMMUTABLE and PARALLEL SAFE with a high COST: a model name resolves to a checkpoint
//! whose weights fingerprint is fixed (see `registry`), so the same arguments always give the
//! same result. They are not declared STRICT only because their optional arguments default to
//! NULL (STRICT would turn every call that relies on a default into NULL); a NULL sequence
//! still gives NULL.

use pgrx::prelude::*;
use plm_model::serve::{Output, Task};
use plm_model::{Matrix, Pooling};

use crate::array2d::RealMatrix;
use crate::errors::OrRaise;
use crate::inference::{run, unexpected};

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

/// Pooled embedding of a protein sequence from `layer` (NULL: the last; negative: from the end).
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_embed(
    sequence: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
) -> Option<Vec<f32>> {
    let sequence = sequence?;
    let task = Task::Embed {
        sequences: vec![sequence.to_string()],
        layer: layer.map(i64::from),
        pooling: self::pooling(pooling),
    };
    vectors(model, task).pop()
}

/// Pooled embeddings of many sequences in length-bucketed batches; one row per array element,
/// `ordinality` 1-based, NULL elements give NULL embeddings.
#[pg_extern(immutable, parallel_safe, cost = 100000, name = "plm_embed")]
fn plm_embed_batch(
    sequences: Option<Vec<Option<String>>>,
    model: default!(Option<&str>, "NULL"),
    layer: default!(Option<i32>, "NULL"),
    pooling: default!(Option<&str>, "'mean'"),
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

/// Per-residue features, a 2-D `real[]` (residues × hidden). With `layers`, the hidden states of
/// those layers side by side (residues × hidden·len(layers)): multi-scale features.
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_embed_residues(
    sequence: Option<&str>,
    model: default!(Option<&str>, "NULL"),
    layer: default!(Option<i32>, "NULL"),
    layers: default!(Option<Vec<Option<i32>>>, "NULL"),
) -> Option<RealMatrix> {
    let sequence = sequence?;
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

/// Predicted residue contacts with probability ≥ `min_probability`: 1-based positions, i < j.
#[pg_extern(immutable, parallel_safe, cost = 100000)]
fn plm_contacts(
    sequence: Option<&str>,
    min_probability: default!(Option<f32>, "0.5"),
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(i, i32), name!(j, i32), name!(probability, f32))> {
    let Some(sequence) = sequence else {
        return TableIterator::new(Vec::new());
    };
    let threshold = min_probability.unwrap_or(0.5);
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
