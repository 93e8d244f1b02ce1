//! The few places where PostgreSQL's C API differs between the supported major versions.

use pgrx::pg_sys;

/// Installs a signal handler the way backends do (`pqsignal`, named `pqsignal_be` from 18 on).
///
/// # Safety
/// As `pqsignal`: call before `BackgroundWorkerUnblockSignals`, with an async-signal-safe handler.
pub unsafe fn pqsignal(signal: i32, handler: pg_sys::pqsigfunc) {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::pqsignal(signal, handler)
    };
    #[cfg(feature = "pg18")]
    // SAFETY: the caller's contract.
    unsafe {
        pg_sys::pqsignal_be(signal, handler)
    };
}

/// Ends this process the PostgreSQL way with status 0 (a background worker is not restarted).
/// The bindings of 18 lose `proc_exit`'s `noreturn`.
#[allow(unreachable_code)]
pub fn exit_quietly() -> ! {
    // SAFETY: runs the exit callbacks and exits; never returns.
    unsafe { pg_sys::proc_exit(0) };
    unreachable!("proc_exit returned")
}
