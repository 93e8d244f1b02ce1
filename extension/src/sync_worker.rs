//! The background workers that keep synced columns current (see `sql/workflows.sql`).
//!
//! One *sync worker* per database drains the queues of that database's syncs: it calls
//! `plm_internal.work()`, one batch per transaction, through the same SQL functions a session
//! uses, so inference goes to the shared inference server and a batch is committed together
//! with its queue changes (a crash loses nothing and does nothing twice). It exits when the
//! database has no active sync; `plm_sync_create`, `plm_sync_resume`, `plm_sync_alter` and
//! `plm_sync_retry` start it again. SIGTERM (`pg_terminate_backend`) ends it at once, rolling
//! back its batch; it is then restarted after a few seconds.
//!
//! With `shared_preload_libraries = 'pg_plm'` a *sync launcher* starts a sync worker in every
//! database when the server starts (those without syncs exit at once).

use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
};
use pgrx::prelude::*;

use crate::{pg_compat, settings};

/// `backend_type` of the sync workers in `pg_stat_activity` (the status view looks for it).
const WORKER_TYPE: &str = "pg_plm sync";
/// Restart delay after a worker ended with an error or was terminated.
const RESTART: Duration = Duration::from_secs(5);

fn worker(database: pg_sys::Oid) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(&format!("pg_plm sync worker for database {database}"))
        .set_type(WORKER_TYPE)
        .set_library("pg_plm")
        .set_function("plm_sync_worker_main")
        .set_argument(Some(pg_sys::Datum::from(u32::from(database))))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART))
}

/// Registers the launcher with the postmaster when preloaded; call from `_PG_init`.
pub fn register() {
    // SAFETY: a plain global of the server, read in the process loading the library.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    BackgroundWorkerBuilder::new("pg_plm sync launcher")
        .set_type("pg_plm sync launcher")
        .set_library("pg_plm")
        .set_function("plm_sync_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .load();
}

/// SIGTERM as in a backend (`die`): the current transaction is abandoned at the next
/// interrupt check, which the engine client makes while it waits for the server.
unsafe extern "C-unwind" fn on_sigterm(_signal: std::ffi::c_int) {
    // SAFETY: only sets flags and the latch, as PostgreSQL's `die` handler does.
    unsafe {
        (&raw mut pg_sys::InterruptPending).write_volatile(1);
        (&raw mut pg_sys::ProcDiePending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// SIGHUP: reload the configuration between batches.
unsafe extern "C-unwind" fn on_sighup(_signal: std::ffi::c_int) {
    // SAFETY: only sets a flag and the latch.
    unsafe {
        (&raw mut pg_sys::ConfigReloadPending).write_volatile(1);
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

fn attach_signal_handlers() {
    // SAFETY: installed before signals are unblocked, as `bgworker.sgml` describes.
    unsafe {
        pg_compat::pqsignal(libc::SIGTERM, Some(on_sigterm));
        pg_compat::pqsignal(libc::SIGHUP, Some(on_sighup));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

fn reload_config_if_asked() {
    // SAFETY: the flag is set by the SIGHUP handler; reloading is the documented response.
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Sleeps until `timeout` passes or the latch is set; ends the process if the postmaster died.
fn nap(timeout: Duration) {
    // SAFETY: waits on this process's latch as PostgreSQL's own workers do.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout.as_millis().min(i64::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// What `pg_stat_activity` shows for this worker: active while it runs a batch.
fn report_activity(running: bool) {
    let (state, query) = if running {
        (
            pg_sys::BackendState::STATE_RUNNING,
            c"SELECT plm_internal.work()",
        )
    } else {
        (pg_sys::BackendState::STATE_IDLE, c"")
    };
    // SAFETY: copies the query text into shared memory, as every backend does.
    unsafe { pg_sys::pgstat_report_activity(state, query.as_ptr()) };
}

/// Entry point of a sync worker; the argument is the database's oid.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn plm_sync_worker_main(arg: pg_sys::Datum) {
    attach_signal_handlers();
    let database = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // One worker per database: the lock lasts as long as this session.
    let ready = BackgroundWorker::transaction(|| {
        let installed = Spi::get_one::<bool>("SELECT to_regproc('plm_internal.work') IS NOT NULL")
            .ok()
            .flatten()
            .unwrap_or(false);
        installed
            && Spi::get_one::<bool>("SELECT pg_try_advisory_lock(hashtext('pg_plm sync worker'))")
                .ok()
                .flatten()
                .unwrap_or(false)
    });
    if !ready {
        pg_compat::exit_quietly();
    }
    BackgroundWorker::transaction(refresh);
    loop {
        reload_config_if_asked();
        report_activity(true);
        let processed = BackgroundWorker::transaction(work);
        report_activity(false);
        match processed.or_else(after_starters) {
            None => {
                pgrx::log!("pg_plm sync worker: no active sync in this database; exiting");
                pg_compat::exit_quietly();
            }
            Some(0) => nap(Duration::from_millis(
                settings::SYNC_POLL_MS.get().max(10) as u64
            )),
            Some(_) => {
                pgrx::check_for_interrupts!();
            }
        }
    }
}

/// The transaction-level advisory lock that backends starting a sync worker hold (shared)
/// until their transaction ends: the sync they created or resumed is invisible until then.
const STARTERS_LOCK: &str = "hashtext('pg_plm sync start')";

/// Runs `plm_internal.work()` again once the transactions that started workers have ended,
/// so a worker started by a transaction that creates a sync does not exit before seeing it.
fn after_starters() -> Option<i32> {
    BackgroundWorker::transaction(|| {
        Spi::run(&format!("SELECT pg_advisory_xact_lock({STARTERS_LOCK})"))
            .unwrap_or_else(|e| pgrx::error!("pg_plm sync worker: {e}"));
        work()
    })
}

/// Checks every sync against its model as installed now (`plm_internal.refresh()`, absent
/// before the SQL objects are updated to 0.3.0): new weights or heads under a sync's model name
/// re-queue its rows. A failure is logged; the worker goes on with the specs it has.
fn refresh() {
    let installed = Spi::get_one::<bool>("SELECT to_regproc('plm_internal.refresh') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false);
    if installed {
        if let Err(e) = Spi::run("SELECT plm_internal.refresh()") {
            pgrx::warning!(
                "pg_plm sync worker: could not check the syncs against their models: {e}"
            );
        }
    }
}

/// One batch of this database's syncs (`plm_internal.work()`): rows processed, `None` when no
/// sync is active.
fn work() -> Option<i32> {
    Spi::get_one::<i32>("SELECT plm_internal.work()")
        .unwrap_or_else(|e| pgrx::error!("pg_plm sync worker: {e}"))
}

/// Entry point of the launcher: starts a sync worker in every database that accepts
/// connections, then exits.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn plm_sync_launcher_main(_arg: pg_sys::Datum) {
    attach_signal_handlers();
    let database =
        settings::string(&settings::SYNC_LAUNCHER_DATABASE).unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let databases: Vec<pg_sys::Oid> = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT oid FROM pg_database WHERE datallowconn AND NOT datistemplate",
                    None,
                    &[],
                )?
                .map(|row| row.get::<pg_sys::Oid>(1))
                .collect::<Result<Vec<_>, _>>()
                .map(|oids| oids.into_iter().flatten().collect())
        })
        .unwrap_or_else(|e| pgrx::error!("pg_plm sync launcher: cannot list databases: {e}"))
    });
    // One database at a time, so a server with many databases never needs more than one
    // spare worker slot: a worker that finds no active sync exits within a moment.
    for oid in databases {
        start_and_settle(oid);
    }
    pg_compat::exit_quietly();
}

/// Starts the sync worker of `database` and waits until it either exited (no active sync) or
/// kept running for a few seconds (it has work). Retries while no worker slot is free.
fn start_and_settle(database: pg_sys::Oid) {
    // SAFETY: a plain global of this process.
    let me = unsafe { pg_sys::MyProcPid };
    for attempt in 0..30 {
        match worker(database).set_notify_pid(me).load_dynamic() {
            Ok(handle) => {
                for _ in 0..50 {
                    if matches!(handle.pid(), Err(BackgroundWorkerStatus::Stopped)) {
                        return;
                    }
                    nap(Duration::from_millis(100));
                }
                return;
            }
            Err(_) if attempt < 29 => nap(Duration::from_secs(1)),
            Err(_) => pgrx::warning!(
                "pg_plm sync launcher: no free background worker slot for database {database} \
                 (raise max_worker_processes); its syncs start with the next plm_sync_resume"
            ),
        }
    }
}

/// Starts this database's sync worker unless one runs; returns whether one runs or was
/// started. Called by the sync functions; call it after restoring a database with syncs on a
/// server that does not preload pg_plm.
#[pg_extern(volatile)]
fn plm_sync_start_worker() -> bool {
    // Until this transaction ends, a worker that finds no active sync waits for it instead of
    // exiting (`after_starters`).
    Spi::run(&format!(
        "SELECT pg_advisory_xact_lock_shared({STARTERS_LOCK})"
    ))
    .unwrap_or_else(|e| pgrx::error!("pg_plm: {e}"));
    let running = Spi::get_one::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = '{WORKER_TYPE}' \
         AND datid = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    ))
    .ok()
    .flatten()
    .unwrap_or(false);
    if running {
        return true;
    }
    // SAFETY: a plain global of this backend, set once it connected to its database.
    let database = unsafe { pg_sys::MyDatabaseId };
    match worker(database).load_dynamic() {
        Ok(_) => true,
        Err(_) => {
            pgrx::warning!(
                "pg_plm: cannot start the sync worker: no free background worker slot (raise \
                 max_worker_processes); queued rows wait, and plm_sync_drain processes them in \
                 a session"
            );
            false
        }
    }
}
