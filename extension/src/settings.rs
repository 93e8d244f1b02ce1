//! `plm.*` settings (GUCs).

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Directory holding one sub-directory per model (superuser only).
pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Model used when a function's `model` argument is NULL (superuser only).
pub static DEFAULT_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `cpu`, `cuda`, `cuda:N` (superuser only).
pub static DEVICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"cpu"));
/// Embedding cache budget in MB (superuser only).
pub static CACHE_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(256);
/// Token budget of one batch.
pub static MAX_TOKENS_PER_BATCH: GucSetting<i32> = GucSetting::<i32>::new(8192);
/// Compute threads of a backend (0: all cores; superuser only).
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Residue limit (clamped to the model's own, 1022 for ESM-2).
pub static MAX_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(1022);
/// `error` or `window`.
pub static LONG_SEQUENCE_POLICY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"error"));

/// Route inference through the shared worker when it runs (superuser only).
pub static USE_WORKER: GucSetting<bool> = GucSetting::<bool>::new(true);
/// What a backend does when the worker is unavailable: `error` or `local` (superuser only).
pub static WORKER_FALLBACK: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"error"));
/// How long a backend waits for a starting worker to accept its connection, ms.
pub static WORKER_CONNECT_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// Longest wait of the worker for more requests to fill a batch, ms (reload).
pub static WORKER_BATCH_WAIT_MS: GucSetting<i32> = GucSetting::<i32>::new(2);
/// Residue budget of one worker batch (reload).
pub static WORKER_MAX_BATCH_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(16_384);
/// Largest request the worker accepts, MB (reload).
pub static WORKER_MAX_REQUEST_MB: GucSetting<i32> = GucSetting::<i32>::new(64);

/// Registers every setting; called from `_PG_init`.
pub fn register() {
    GucRegistry::define_bool_guc(
        c"plm.use_worker",
        c"Send inference to the shared worker when pg_plm is in shared_preload_libraries.",
        c"Off: this backend loads and runs models itself (one copy per backend).",
        &USE_WORKER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"plm.worker_fallback",
        c"When the shared worker is unavailable: error, or local (run in this backend).",
        c"A request in flight when the worker ends gets an error unless this is local.",
        &WORKER_FALLBACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.worker_connect_timeout_ms",
        c"How long a backend waits for a (re)starting worker, in milliseconds.",
        c"The worker restarts about a second after it ends.",
        &WORKER_CONNECT_TIMEOUT_MS,
        0,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"plm.worker_batch_wait_ms",
        c"Longest wait of the shared worker for concurrent requests to fill a batch.",
        c"0 runs each request as soon as the worker is free.",
        &WORKER_BATCH_WAIT_MS,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"plm.worker_max_batch_tokens",
        c"Residue budget of one batch of the shared worker.",
        c"Requests join a batch until this many residues are gathered.",
        &WORKER_MAX_BATCH_TOKENS,
        64,
        1 << 24,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.worker_max_request_mb",
        c"Largest request the shared worker accepts, in megabytes.",
        c"Larger requests are refused with an error.",
        &WORKER_MAX_REQUEST_MB,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
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
        c"Model used when the model argument is NULL.",
        c"Empty means plm-default when present, else the only model in plm.model_dir.",
        &DEFAULT_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"plm.device",
        c"Device models run on: cpu, cuda or cuda:N.",
        c"CUDA needs a build with the cuda feature.",
        &DEVICE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.cache_size_mb",
        c"Size of the embedding cache in megabytes (0 disables it).",
        c"The cache is keyed by model fingerprint, output kind and sequence.",
        &CACHE_SIZE_MB,
        0,
        1 << 20,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"plm.max_tokens_per_batch",
        c"Token budget of one inference batch, padding included.",
        c"Sequences are sorted by length and cut into batches under this budget.",
        &MAX_TOKENS_PER_BATCH,
        64,
        1 << 24,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.threads",
        c"Compute threads per backend (0: all cores).",
        c"Applies when a model is loaded.",
        &THREADS,
        0,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"plm.max_length",
        c"Longest sequence, in residues, embedded in one pass.",
        c"Clamped to the model's own limit (1022 for ESM-2).",
        &MAX_LENGTH,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"plm.long_sequence_policy",
        c"What to do with sequences over plm.max_length: error or window.",
        c"window embeds overlapping windows and averages the per-residue outputs.",
        &LONG_SEQUENCE_POLICY,
        GucContext::Userset,
        GucFlags::default(),
    );
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

fn share_dir() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pgrx::pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is a NUL-terminated MAXPGPATH buffer set at start-up, and
    // get_share_path writes at most MAXPGPATH bytes into `buf`.
    unsafe {
        pgrx::pg_sys::get_share_path(
            std::ptr::addr_of!(pgrx::pg_sys::my_exec_path).cast::<std::ffi::c_char>(),
            buf.as_mut_ptr(),
        );
        PathBuf::from(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}
