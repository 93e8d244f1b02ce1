//! `plm.*` settings (GUCs): typed (enums for policies and modes, a checked device name), the
//! `plm` prefix reserved so that a misspelled name is an error, and bad values refused at
//! `SET` rather than at the next query.
//!
//! Settings a session may change (`plm.max_length`, `plm.long_sequence_policy`,
//! `plm.max_tokens_per_batch`, `plm.worker_connect_timeout_ms`) only decide whether a call is
//! accepted, never what it returns. Everything that touches files, devices, processes or
//! resource limits is superuser-only or set in the server's configuration.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use plm_model::{DeviceSpec, LongSequencePolicy};

/// What to do with sequences over the model's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum LongSequences {
    /// Refuse them.
    #[name = c"error"]
    Error,
    /// Overlapping windows of the model's length, averaged per residue.
    #[name = c"window"]
    Window,
}

impl From<LongSequences> for LongSequencePolicy {
    fn from(p: LongSequences) -> Self {
        match p {
            LongSequences::Error => LongSequencePolicy::Error,
            LongSequences::Window => LongSequencePolicy::Window,
        }
    }
}

/// What a backend does when the inference server is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum Fallback {
    /// Raise `08006`.
    #[name = c"error"]
    Error,
    /// Compute in this backend (no crash isolation for that request).
    #[name = c"local"]
    Local,
}

/// Directory holding one sub-directory per model (superuser only).
pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Model used by the forms without a `model` argument (superuser only).
pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `cpu`, `cuda`, `cuda:N` (superuser only; checked at `SET`).
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));
/// Embedding cache budget in MB (superuser only).
pub static CACHE_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(256);
/// Token budget of one batch of in-backend inference.
pub static MAX_TOKENS_PER_BATCH: GucSetting<i32> = GucSetting::<i32>::new(8192);
/// Compute threads (0: all cores; superuser only).
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Longest sequence accepted, in residues, under either policy.
pub static MAX_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(100_000);
/// What to do with sequences over the model's own limit.
pub static LONG_SEQUENCE_POLICY: GucSetting<LongSequences> =
    GucSetting::<LongSequences>::new(LongSequences::Error);
/// Most memory one request may need, MB (0: an eighth of the machine's memory).
pub static MAX_REQUEST_MB: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Send inference to the isolated inference server (superuser only; off is for debugging).
pub static USE_WORKER: GucSetting<bool> = GucSetting::<bool>::new(true);
/// What a backend does when the server is unavailable (superuser only).
pub static WORKER_FALLBACK: GucSetting<Fallback> = GucSetting::<Fallback>::new(Fallback::Error);
/// How long a backend waits for a (re)starting server, ms.
pub static WORKER_CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Longest wait of the server for more requests to fill a batch, ms (reload).
pub static WORKER_BATCH_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Residue budget of one server batch (reload).
pub static WORKER_MAX_BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(16_384);
/// The server executable (reload; empty: `plm-serve` beside the `postgres` executable).
pub static SERVER_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// How often an idle sync worker looks for queued rows, ms (reload).
pub static SYNC_POLL_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
/// Residue budget of one sync batch (read by `plm_internal.step`).
pub static SYNC_BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(32_768);
/// The database the sync launcher connects to in order to list the others (postmaster start).
pub static SYNC_LAUNCHER_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// Registers every setting; called from `_PG_init`.
pub fn register() {
    GucRegistry::define_int_guc(
        c"plm.sync_poll_ms",
        c"How often an idle sync worker looks for queued rows, in milliseconds.",
        c"Rows queued by the sync triggers are picked up within this time.",
        &SYNC_POLL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"plm.sync_batch_tokens",
        c"Most residues in one batch of a synced column (one transaction of the sync worker).",
        c"A batch holds at least one row, and at most the sync's batch_rows.",
        &SYNC_BATCH_TOKENS,
        64,
        10_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    // A server-start setting can only be defined while the library is preloaded (defining
    // it in a backend that loads the library later is a FATAL error); the launcher that
    // reads it only exists then.
    // SAFETY: a plain global of the server, read in the process loading the library.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_string_guc(
            c"plm.sync_launcher_database",
            c"Database the sync launcher connects to at server start to list the databases.",
            c"It starts a sync worker in each database; those without syncs exit at once.",
            &SYNC_LAUNCHER_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_bool_guc(
        c"plm.use_worker",
        c"Send inference to the isolated inference server (plm-serve).",
        c"Off computes in this backend, without crash isolation: for debugging only.",
        &USE_WORKER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"plm.worker_fallback",
        c"When the inference server is unavailable: error, or local (compute in this backend).",
        c"A request in flight when the server ends gets an error unless this is local.",
        &WORKER_FALLBACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.worker_connect_timeout_ms",
        c"How long a backend waits for a (re)starting inference server, in milliseconds.",
        c"The server restarts within a second of ending, plus the time to load the default model.",
        &WORKER_CONNECT_TIMEOUT_MS,
        0,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"plm.worker_batch_wait_ms",
        c"Longest wait of the inference server for concurrent requests to fill a batch.",
        c"0 runs each request as soon as the server is free.",
        &WORKER_BATCH_WAIT_MS,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"plm.worker_max_batch_tokens",
        c"Residue budget of one batch of the inference server.",
        c"Requests join a batch until this many residues are gathered.",
        &WORKER_MAX_BATCH_TOKENS,
        64,
        1 << 24,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.max_request_mb",
        c"Most memory one request may need, in megabytes (0: an eighth of the machine's memory).",
        c"Estimated from the request's shape before anything runs; larger requests fail with SQLSTATE 54000.",
        &MAX_REQUEST_MB,
        0,
        1 << 22,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_string_guc(
        c"plm.server_path",
        c"The inference server executable.",
        c"Empty means plm-serve in the directory of the postgres executable.",
        &SERVER_PATH,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"plm.model_dir",
        c"Directory of model checkpoints (one sub-directory per model).",
        c"Empty means SHAREDIR/extension/pg_plm_models, where the installer puts the default model.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"plm.default_model",
        c"Model used by the function forms without a model argument.",
        c"Empty means plm-default when present, else the only model in plm.model_dir.",
        &DEFAULT_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: registering a string setting with a check hook that neither panics nor raises.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"plm.device",
            c"Device models run on: cpu, cuda or cuda:N.",
            c"CUDA needs a build with the cuda feature.",
            &DEVICE,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_device),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"plm.cache_size_mb",
        c"Size of the embedding cache in megabytes (0 disables it).",
        c"The cache is keyed by model fingerprint, output kind and sequence. One cache serves every session (the inference server's): set it in the server configuration.",
        &CACHE_SIZE_MB,
        0,
        1 << 20,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"plm.max_tokens_per_batch",
        c"Token budget of one batch of in-backend inference, padding included.",
        c"Results do not depend on it; the inference server uses plm.worker_max_batch_tokens.",
        &MAX_TOKENS_PER_BATCH,
        64,
        1 << 24,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.threads",
        c"Compute threads (0: all cores).",
        c"Of the inference server, which every session shares: set it in the server configuration.",
        &THREADS,
        0,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.max_length",
        c"Longest sequence accepted, in residues.",
        c"Longer sequences are refused under either long-sequence policy.",
        &MAX_LENGTH,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"plm.long_sequence_policy",
        c"What to do with sequences over the model's own limit: error or window.",
        c"window embeds overlapping windows of the model's length and averages per residue.",
        &LONG_SEQUENCE_POLICY,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called once from _PG_init, after this prefix's settings are defined.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"plm".as_ptr()) };
}

/// Check hook of `plm.device`: a device this build can use.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_device(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to a NUL-terminated string (or NULL).
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        CStr::from_ptr(*newval).to_string_lossy().into_owned()
    };
    let problem = match value.trim().parse::<DeviceSpec>() {
        Ok(DeviceSpec::Cuda(_)) if !cfg!(feature = "cuda") => Some(
            "this build of pg_plm has no CUDA support (build it with the cuda feature)".to_string(),
        ),
        Ok(_) => None,
        Err(_) if value.trim().is_empty() => None,
        Err(e) => Some(e.to_string()),
    };
    let Some(problem) = problem else {
        return true;
    };
    let detail = CString::new(problem).unwrap_or_default();
    // SAFETY: the documented way to report a check hook's failure: a palloc'd detail string.
    unsafe {
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
    }
    false
}

/// The value of a string setting, `None` when unset or empty.
pub fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|c| c.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The configured model directory, or SHAREDIR/extension/pg_plm_models.
pub fn model_dir() -> PathBuf {
    string(&MODEL_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| share_dir().join("extension").join("pg_plm_models"))
}

/// `plm.max_request_mb`, with 0 meaning an eighth of the machine's memory (at least 256 MB).
pub fn max_request_mb() -> u64 {
    match MAX_REQUEST_MB.get() {
        mb if mb > 0 => mb as u64,
        _ => (physical_memory_mb() / 8).max(256),
    }
}

fn physical_memory_mb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || size <= 0 {
        return 8192;
    }
    (pages as u64 * size as u64) >> 20
}

/// The directory of the running `postgres` executable (where `plm-serve` is installed).
pub fn bin_dir() -> PathBuf {
    // SAFETY: my_exec_path is a NUL-terminated MAXPGPATH buffer set at start-up.
    let exec = unsafe {
        CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path).cast::<std::ffi::c_char>())
            .to_string_lossy()
            .into_owned()
    };
    PathBuf::from(exec)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The inference server executable: `plm.server_path`, or `plm-serve` beside `postgres`.
pub fn server_path() -> PathBuf {
    string(&SERVER_PATH)
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("plm-serve"))
}

fn share_dir() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is a NUL-terminated MAXPGPATH buffer set at start-up, and
    // get_share_path writes at most MAXPGPATH bytes into `buf`.
    unsafe {
        pg_sys::get_share_path(
            std::ptr::addr_of!(pg_sys::my_exec_path).cast::<std::ffi::c_char>(),
            buf.as_mut_ptr(),
        );
        PathBuf::from(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}
