//! Functions for operators: installed models, cache counters, version.

use pgrx::prelude::*;
use plm_model::Checkpoint;

use crate::registry::{available_models, cache, is_loaded};
use crate::settings;

/// The models in `plm.model_dir`, with their fingerprints; unreadable ones show the error.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out here
fn plm_models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(loaded, bool),
        name!(fingerprint, Option<String>),
        name!(parameters, Option<i64>),
        name!(embedding_dim, Option<i32>),
        name!(layers, Option<i32>),
        name!(max_residues, Option<i32>),
        name!(heads, Option<Vec<String>>),
        name!(path, String),
        name!(error, Option<String>),
    ),
> {
    let dir = settings::model_dir();
    let rows: Vec<_> = available_models()
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let loaded = is_loaded(&name);
            match Checkpoint::open(&path) {
                Ok(ckpt) => {
                    let m = ckpt.describe();
                    (
                        name,
                        loaded,
                        Some(m.fingerprint),
                        Some(m.parameters as i64),
                        Some(m.embedding_dim as i32),
                        Some(m.num_layers as i32),
                        Some(ckpt.config.max_residues() as i32),
                        Some(m.heads),
                        path.display().to_string(),
                        None,
                    )
                }
                Err(e) => (
                    name,
                    loaded,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    path.display().to_string(),
                    Some(e.to_string()),
                ),
            }
        })
        .collect();
    TableIterator::new(rows)
}

/// Counters of this backend's embedding cache.
#[pg_extern]
fn plm_cache_stats() -> TableIterator<
    'static,
    (
        name!(hits, i64),
        name!(misses, i64),
        name!(evictions, i64),
        name!(insertions, i64),
        name!(entries, i64),
        name!(bytes, i64),
        name!(capacity_bytes, i64),
    ),
> {
    let s = cache().stats();
    TableIterator::once((
        s.hits as i64,
        s.misses as i64,
        s.evictions as i64,
        s.insertions as i64,
        s.entries as i64,
        s.bytes as i64,
        s.capacity_bytes as i64,
    ))
}

/// Empties this backend's embedding cache; returns the number of entries dropped.
#[pg_extern]
fn plm_cache_clear() -> i64 {
    let c = cache();
    let n = c.stats().entries as i64;
    c.clear();
    n
}

/// Version of the extension and the model library.
#[pg_extern(immutable, parallel_safe)]
fn plm_version() -> String {
    format!(
        "pg_plm {} (plm-model {}, candle 0.11)",
        env!("CARGO_PKG_VERSION"),
        plm_model::VERSION
    )
}
