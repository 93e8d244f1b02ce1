//! Functions for operators: installed models, cache counters, version.

use pgrx::prelude::*;
use plm_model::{CacheStats, Checkpoint};
use plm_serve::{Output, Request, WorkerStats};

use crate::errors::{raise, OrRaise};
use crate::inference::unexpected;
use crate::registry::{available_models, cache, local_registry, model_ref};
use crate::server as worker;
use crate::settings;

/// The server's counters, when this backend uses the server.
fn worker_stats() -> Option<WorkerStats> {
    worker::active().then(|| fetch_worker_stats().unwrap_or_else(|e| raise(e)))
}

/// Asks the server for its counters.
fn fetch_worker_stats() -> Result<WorkerStats, plm_model::PlmError> {
    match worker::call(&Request::Stats)? {
        Output::Stats(s) => Ok(*s),
        other => unexpected(&other),
    }
}

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
    // Listing models must work while the worker restarts: then nothing counts as loaded.
    let in_worker =
        worker::active().then(|| fetch_worker_stats().map(|s| s.models).unwrap_or_default());
    let rows: Vec<_> = available_models()
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let loaded = match &in_worker {
                Some(models) => models.contains(&path),
                None => local_registry().is_loaded(&path),
            };
            match Checkpoint::open(&path) {
                Ok(ckpt) => {
                    let m = ckpt.describe();
                    (
                        name,
                        loaded,
                        Some(ckpt.fingerprint.clone()),
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

/// The model `model` resolves to (NULL: the default model, as the functions without `model`
/// use it): its name, weights fingerprint and sizes. Raises an error for an unknown or
/// unreadable model; the synced columns record the fingerprint with each value.
#[pg_extern(stable, parallel_safe)]
fn plm_model_info(
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(fingerprint, String),
        name!(embedding_dim, i32),
        name!(layers, i32),
    ),
> {
    let model = model_ref(model);
    let ckpt = Checkpoint::open(&model.dir).or_raise();
    let m = ckpt.describe();
    TableIterator::once((
        model.name,
        ckpt.fingerprint,
        m.embedding_dim as i32,
        m.num_layers as i32,
    ))
}

/// What the answers of `model` (NULL: the default model) for `task` (`ec`, `go_mf`, `go_bp`,
/// `go_cc`, `ppi`, `binding`) depend on besides its weights (`plm_model_info`'s fingerprint):
/// the SHA-256 of its task heads and of the task's reference set. Synced prediction columns
/// record it, so `plm_sync_alter(name)` re-queues their rows after new heads or reference sets
/// were installed under the same model name.
#[pg_extern(stable, parallel_safe)]
fn plm_task_fingerprint(task: &str, model: default!(Option<&str>, "NULL")) -> String {
    let model = model_ref(model);
    plm_model::homology::task_fingerprint(
        &model.dir,
        &plm_serve::execute::reference_dir(&model.dir),
        task.trim(),
    )
    .or_raise()
}

/// Counters of the embedding cache: the worker's shared one, or this backend's own.
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
    let s: CacheStats = match worker_stats() {
        Some(w) => w.cache,
        None => cache().stats(),
    };
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

/// Empties the embedding cache (the worker's, or this backend's); returns the entries dropped.
#[pg_extern]
fn plm_cache_clear() -> i64 {
    if worker::active() {
        return match worker::call(&Request::ClearCache) {
            Ok(Output::Cleared(n)) => n as i64,
            Ok(other) => unexpected(&other),
            Err(e) => raise(e),
        };
    }
    let c = cache();
    let n = c.stats().entries as i64;
    c.clear();
    n
}

/// The inference server: its supervisor's state (`running`, `restarting`, `stopped`), the
/// restarts and how the last server process ended, and the server's counters (NULL while it
/// is not reachable). No row before a supervisor ever ran in this data directory.
#[pg_extern(name = "plm_worker_stats")]
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out here
fn plm_worker_stats_v2() -> TableIterator<
    'static,
    (
        name!(state, String),
        name!(supervisor_pid, i32),
        name!(restarts, i64),
        name!(last_exit, Option<String>),
        name!(pid, Option<i32>),
        name!(uptime_s, Option<f64>),
        name!(requests, Option<i64>),
        name!(batches, Option<i64>),
        name!(mean_batch_size, Option<f64>),
        name!(sequences, Option<i64>),
        name!(mean_queue_wait_ms, Option<f64>),
        name!(max_queue_wait_ms, Option<f64>),
        name!(errors, Option<i64>),
        name!(refused, Option<i64>),
        name!(cancelled, Option<i64>),
        name!(connections, Option<i64>),
        name!(cache_hits, Option<i64>),
        name!(cache_misses, Option<i64>),
        name!(cache_entries, Option<i64>),
        name!(cache_bytes, Option<i64>),
        name!(models, Option<Vec<String>>),
        name!(resident_bytes, Option<i64>),
    ),
> {
    let server = worker::active()
        .then(|| fetch_worker_stats().ok())
        .flatten();
    let Some(supervisor) = worker::supervisor_state() else {
        return TableIterator::new(Vec::new());
    };
    let per = |total: u64, n: u64| if n == 0 { 0.0 } else { total as f64 / n as f64 };
    let n = |v: u64| Some(v as i64);
    let row = match server {
        Some(s) => (
            supervisor.state,
            supervisor.supervisor_pid as i32,
            supervisor.restarts as i64,
            supervisor.last_exit,
            Some(s.pid as i32),
            Some(s.uptime_s),
            n(s.requests),
            n(s.batches),
            Some(per(s.requests, s.batches)),
            n(s.sequences),
            Some(per(s.queue_wait_us, s.requests) / 1000.0),
            Some(s.max_queue_wait_us as f64 / 1000.0),
            n(s.errors),
            n(s.refused),
            n(s.cancelled),
            n(s.connections),
            n(s.cache.hits),
            n(s.cache.misses),
            n(s.cache.entries),
            n(s.cache.bytes),
            Some(s.models.iter().map(|m| m.display().to_string()).collect()),
            n(s.resident_bytes),
        ),
        None => (
            supervisor.state,
            supervisor.supervisor_pid as i32,
            supervisor.restarts as i64,
            supervisor.last_exit,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    };
    TableIterator::once(row)
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
