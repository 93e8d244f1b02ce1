//! The shared inference worker: a background worker that holds the models and serves every
//! backend over a Unix-domain socket in the data directory (see `plm_model::serve`).
//!
//! It is registered only when the library is in `shared_preload_libraries`. Nothing heavy
//! happens in the postmaster: models, compute threads and any CUDA context are created inside
//! the worker process after `fork()`.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use plm_model::serve::{Output, Request, Server, ServerConfig, WorkerClient};
use plm_model::{ErrorClass, ModelRegistry, PlmError};

use crate::registry::{self, cache, check_interrupts};
use crate::settings;

/// Socket file, relative to the data directory (every server process runs there).
pub const SOCKET: &str = "pg_plm_worker.sock";

/// Set in the postmaster when the library is preloaded; inherited by every child.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Registers the worker; call from `_PG_init`.
pub fn register() {
    // SAFETY: a plain global of the server, read in the process loading the library.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::SeqCst);
    BackgroundWorkerBuilder::new("pg_plm inference worker")
        .set_type("pg_plm inference worker")
        .set_library("pg_plm")
        .set_function("plm_worker_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Whether this backend sends inference to the worker.
pub fn active() -> bool {
    PRELOADED.load(Ordering::SeqCst) && settings::USE_WORKER.get()
}

fn server_config() -> ServerConfig {
    ServerConfig {
        batch_wait: Duration::from_millis(settings::WORKER_BATCH_WAIT_MS.get().max(0) as u64),
        max_batch_tokens: settings::WORKER_MAX_BATCH_TOKENS.get().max(64) as usize,
        max_request_bytes: settings::WORKER_MAX_REQUEST_MB.get().max(1) as usize * 1024 * 1024,
        threads: settings::THREADS.get().max(0) as usize,
    }
}

/// Entry point of the worker process.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn plm_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let registry = ModelRegistry::new(cache());
    let config = server_config();
    let server = match Server::start(Path::new(SOCKET), registry, config) {
        Ok(s) => s,
        Err(e) => {
            // Exits with status 1: the postmaster restarts the worker after its restart time.
            pgrx::error!("pg_plm worker: cannot listen on {SOCKET}: {e}");
        }
    };
    let handle = server.handle();
    // Load the default model now, so that the first query of a new connection is fast.
    let default = registry::default_model_ref();
    match &default {
        Some(model) => {
            let loaded = handle.registry().get(
                &model.dir,
                &model.name,
                model.device,
                // Per-request settings replace these on every call; no session settings are
                // read here (a bad value must not stop the worker).
                plm_model::EngineOptions {
                    max_tokens_per_batch: config.max_batch_tokens,
                    threads: config.threads,
                    ..Default::default()
                },
            );
            match loaded {
                Ok(m) => pgrx::log!(
                    "pg_plm worker: ready on {SOCKET} with model '{}' ({}, fingerprint {})",
                    model.name,
                    model.device,
                    &m.engine.fingerprint()[..16]
                ),
                Err(e) => pgrx::log!(
                    "pg_plm worker: ready on {SOCKET}; default model '{}' not loaded: {e}",
                    model.name
                ),
            }
        }
        None => pgrx::log!("pg_plm worker: ready on {SOCKET} (no default model found)"),
    }
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            handle.set_config(server_config());
        }
    }
    server.shutdown();
    pgrx::log!("pg_plm worker: stopped");
    // Status 1: restarted by the postmaster unless the server is shutting down.
    // SAFETY: ends this process the PostgreSQL way.
    unsafe { pg_sys::proc_exit(1) };
}

thread_local! {
    /// This backend's open connection to the worker.
    static CLIENT: RefCell<Option<WorkerClient>> = const { RefCell::new(None) };
}

fn poll() {
    check_interrupts();
}

/// Sends `request` to the worker over this backend's connection (opened on first use and
/// reopened when the worker restarted). If the query is cancelled while waiting, the
/// connection is dropped, which tells the worker to discard the request.
pub fn call(request: &Request) -> Result<Output, PlmError> {
    let cached = CLIENT.with(|c| c.borrow_mut().take());
    let mut client = match cached.filter(WorkerClient::is_alive) {
        Some(c) => c,
        None => {
            let patience =
                Duration::from_millis(settings::WORKER_CONNECT_TIMEOUT_MS.get().max(0) as u64);
            WorkerClient::connect(Path::new(SOCKET), patience, &mut poll)?
        }
    };
    let result = client.call(request, &mut poll);
    // A connection that failed is not reused.
    if !matches!(&result, Err(e) if e.class() == ErrorClass::Unavailable) {
        CLIENT.with(|c| *c.borrow_mut() = Some(client));
    }
    result
}

/// Whether a worker error should be answered by computing in this backend.
pub fn fall_back(err: &PlmError) -> bool {
    err.class() == ErrorClass::Unavailable
        && settings::string(&settings::WORKER_FALLBACK).as_deref() == Some("local")
}
