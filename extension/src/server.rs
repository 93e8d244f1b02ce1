//! The isolated inference server, seen from PostgreSQL.
//!
//! Models run in `plm-serve`, a separate executable that PostgreSQL does not count as one of
//! its processes: a background worker, the *pg_plm supervisor*, starts it with fork + exec,
//! restarts it with backoff when it ends, and publishes its state (see
//! `plm_serve::process`). Nothing that happens in the server, including the OOM killer or
//! `kill -9`, makes PostgreSQL restart.
//!
//! With `shared_preload_libraries = 'pg_plm'` the supervisor starts with the postmaster.
//! Without it, the first backend that needs inference starts the same supervisor as a dynamic
//! background worker (a lock file keeps it to one per data directory), so isolation is the
//! default either way. Backends talk to the server over a Unix socket in the data directory.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use plm_model::{ErrorClass, PlmError};
use plm_serve::client::SERVER_ENDED;
use plm_serve::process::{InstanceLock, ServeOptions, Supervisor, SupervisorState};
use plm_serve::{Output, Request, WorkerClient};

use crate::pg_compat;
use crate::registry::{self, check_interrupts};
use crate::settings::{self, Fallback};

/// The server's socket, relative to the data directory (every server process runs there).
pub const SOCKET: &str = "pg_plm_server.sock";
/// Held by the one running supervisor.
const LOCK: &str = "pg_plm_server.lock";
/// The supervisor's published state.
pub const STATE: &str = "pg_plm_server.state";

/// Set in the postmaster when the library is preloaded; inherited by every child.
static PRELOADED: AtomicBool = AtomicBool::new(false);

fn builder() -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new("pg_plm supervisor")
        .set_type("pg_plm supervisor")
        .set_library("pg_plm")
        .set_function("plm_supervisor_main")
        .enable_shmem_access(None)
}

/// Registers the supervisor with the postmaster when preloaded; call from `_PG_init`.
pub fn register() {
    // SAFETY: a plain global of the server, read in the process loading the library.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::SeqCst);
    builder()
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Whether this backend sends inference to the server (the default; off only by a
/// superuser, for debugging).
pub fn active() -> bool {
    settings::USE_WORKER.get()
}

/// The server's command line from the current settings.
fn serve_options() -> ServeOptions {
    ServeOptions {
        socket: SOCKET.into(),
        model_dir: Some(settings::model_dir()),
        default_model: registry::default_model_ref().map(|m| m.name),
        device: settings::string(&settings::DEVICE).unwrap_or_else(|| "cpu".into()),
        cache_mb: settings::CACHE_SIZE_MB.get().max(0) as u64,
        threads: settings::THREADS.get().max(0) as usize,
        batch_wait_ms: settings::WORKER_BATCH_WAIT_MS.get().max(0) as u64,
        max_batch_tokens: settings::WORKER_MAX_BATCH_TOKENS.get().max(64) as usize,
        max_request_mb: settings::max_request_mb(),
    }
}

/// Entry point of the supervisor process.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn plm_supervisor_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let _lock = match InstanceLock::try_acquire(Path::new(LOCK)) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            // Another supervisor runs (a backend started one while the server restarted).
            pg_compat::exit_quietly();
        }
        Err(e) => pgrx::error!("pg_plm supervisor: cannot lock {LOCK}: {e}"),
    };
    let program = settings::server_path();
    pgrx::log!(
        "pg_plm supervisor: starting the inference server {}",
        program.display()
    );
    let mut supervisor = Supervisor::new(program, serve_options(), STATE.into());
    let mut reported = String::new();
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            let program = settings::server_path();
            if supervisor.reconfigure(program.clone(), serve_options()) {
                pgrx::log!(
                    "pg_plm supervisor: settings changed; inference server {} restarted with them",
                    program.display()
                );
            }
        }
        supervisor.tick();
        let state = supervisor.state();
        let summary = format!("{} (server pid {})", state.summary(), state.server_pid);
        if summary != reported {
            if state.restarts > 0 || state.last_error.is_some() {
                pgrx::log!("pg_plm supervisor: inference server {summary}");
            }
            reported = summary;
        }
    }
    supervisor.stop();
    pgrx::log!("pg_plm supervisor: stopped");
    pg_compat::exit_quietly();
}

thread_local! {
    /// This backend's open connection to the server.
    static CLIENT: RefCell<Option<WorkerClient>> = const { RefCell::new(None) };
    /// When this backend last asked the postmaster for a supervisor.
    static LAST_START: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Without preloading: starts the supervisor as a dynamic background worker when no server
/// answers (at most every two seconds per backend; extra supervisors exit at once).
fn start_supervisor_if_needed() {
    if PRELOADED.load(Ordering::SeqCst) {
        return;
    }
    let recently = LAST_START
        .with(Cell::get)
        .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
    if recently {
        return;
    }
    LAST_START.with(|t| t.set(Some(Instant::now())));
    let started = builder()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(None)
        .load_dynamic();
    if started.is_err() {
        pgrx::warning!(
            "pg_plm: cannot start the inference server's supervisor: no free background worker \
             slot (raise max_worker_processes, or preload pg_plm)"
        );
    }
}

fn poll() {
    check_interrupts();
}

/// The supervisor's published state, if one ever ran in this data directory.
pub fn supervisor_state() -> Option<SupervisorState> {
    SupervisorState::read(Path::new(STATE))
}

/// The supervisor's view, for error messages.
fn supervisor_says() -> String {
    match supervisor_state() {
        Some(state) => format!("; supervisor: {}", state.summary()),
        None => String::new(),
    }
}

/// After the server went away mid-request: how it ended, once the supervisor has seen it.
fn how_it_ended(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline {
        if let Some(state) = supervisor_state() {
            if state.server_pid != pid {
                if let Some(exit) = state.last_exit {
                    return exit;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    "ended".into()
}

fn connect() -> Result<WorkerClient, PlmError> {
    if let Ok(client) = WorkerClient::connect(Path::new(SOCKET), Duration::ZERO, &mut poll) {
        return Ok(client);
    }
    start_supervisor_if_needed();
    let patience = Duration::from_millis(settings::WORKER_CONNECT_TIMEOUT_MS.get().max(0) as u64);
    WorkerClient::connect(Path::new(SOCKET), patience, &mut poll).map_err(|e| match e {
        PlmError::WorkerUnavailable(why) => {
            PlmError::WorkerUnavailable(format!("{why}{}", supervisor_says()))
        }
        other => other,
    })
}

/// Sends `request` to the server over this backend's connection (opened on first use and
/// reopened after the server restarted). If the query is cancelled while waiting, the
/// connection is dropped, which tells the server to abandon the request.
pub fn call(request: &Request) -> Result<Output, PlmError> {
    let cached = CLIENT.with(|c| c.borrow_mut().take());
    let mut client = match cached.filter(WorkerClient::is_alive) {
        Some(c) => c,
        None => connect()?,
    };
    let pid = client.worker_pid();
    match client.call(request, &mut poll) {
        Err(PlmError::WorkerUnavailable(why)) if why == SERVER_ENDED => {
            Err(PlmError::WorkerUnavailable(format!(
                "the inference server (pid {pid}) {} while computing this request; it restarts \
                 on its own, and the next query will be answered (see the server log)",
                how_it_ended(pid)
            )))
        }
        // A connection that failed is not reused.
        Err(e) if e.class() == ErrorClass::Unavailable => Err(e),
        result => {
            CLIENT.with(|c| *c.borrow_mut() = Some(client));
            result
        }
    }
}

/// Whether a server error should be answered by computing in this backend.
pub fn fall_back(err: &PlmError) -> bool {
    err.class() == ErrorClass::Unavailable && settings::WORKER_FALLBACK.get() == Fallback::Local
}
