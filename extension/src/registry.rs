//! Per-backend registry of loaded models.
//!
//! A model name is a sub-directory of `plm.model_dir`. Loaded engines are kept for the life
//! of the backend; before each use the weights file is checked (size and modification time),
//! and a changed file whose fingerprint differs from the loaded one is an error: the SQL
//! functions are IMMUTABLE, so one name must always mean the same weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use plm_model::checkpoint::{files, sha256_file};
use plm_model::heads::files as head_files;
use plm_model::{
    Checkpoint, DeviceSpec, EmbeddingCache, Engine, EngineOptions, LongSequencePolicy, PlmError,
    TaskHeads,
};

use crate::errors::{raise, undefined_object, OrRaise};
use crate::settings;

/// Name of the shipped default model.
pub const DEFAULT_MODEL_NAME: &str = "plm-default";

struct Loaded {
    engine: Arc<Engine>,
    heads: Option<Arc<TaskHeads>>,
    weights: PathBuf,
    stamp: (u64, Option<SystemTime>),
    heads_stamp: (u64, Option<SystemTime>),
}

fn registry() -> &'static Mutex<HashMap<String, Loaded>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Loaded>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The backend's embedding cache, sized by `plm.cache_size_mb`.
pub fn cache() -> Arc<EmbeddingCache> {
    static CACHE: OnceLock<Arc<EmbeddingCache>> = OnceLock::new();
    let cache = CACHE
        .get_or_init(|| Arc::new(EmbeddingCache::new(cache_bytes())))
        .clone();
    let wanted = cache_bytes() as u64;
    if cache.stats().capacity_bytes != wanted {
        cache.resize(wanted as usize);
    }
    cache
}

fn cache_bytes() -> usize {
    settings::CACHE_SIZE_MB.get().max(0) as usize * 1024 * 1024
}

fn stamp(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.modified().ok()))
        .unwrap_or((0, None))
}

/// Names of the model directories (sub-directories with a `config.json`), sorted.
pub fn available_models() -> Vec<String> {
    let dir = settings::model_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join(files::CONFIG).is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Resolves the `model` argument: the name given, `plm.default_model`, `plm-default`, or the
/// only model present.
pub fn resolve_name(model: Option<&str>) -> String {
    if let Some(m) = model.map(str::trim).filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    if let Some(m) = settings::string(&settings::DEFAULT_MODEL) {
        return m;
    }
    let models = available_models();
    if models.iter().any(|m| m == DEFAULT_MODEL_NAME) || models.is_empty() {
        return DEFAULT_MODEL_NAME.to_string();
    }
    if models.len() == 1 {
        return models[0].clone();
    }
    undefined_object(format!(
        "no default model: set plm.default_model or pass a model name (available: {})",
        models.join(", ")
    ))
}

fn unknown_model(name: &str) -> ! {
    let dir = settings::model_dir();
    let models = available_models();
    let available = if models.is_empty() {
        format!("none: {} holds no model directories", dir.display())
    } else {
        models.join(", ")
    };
    undefined_object(format!("unknown model '{name}' (available: {available})"))
}

fn engine_options() -> EngineOptions {
    let policy = settings::string(&settings::LONG_SEQUENCE_POLICY)
        .unwrap_or_else(|| "error".into())
        .parse::<LongSequencePolicy>()
        .or_raise();
    EngineOptions {
        max_tokens_per_batch: settings::MAX_TOKENS_PER_BATCH.get().max(64) as usize,
        long_sequences: policy,
        max_residues: Some(settings::MAX_LENGTH.get().max(1) as usize),
        window_overlap: 256,
        threads: settings::THREADS.get().max(0) as usize,
        interrupt_check: Some(check_interrupts),
    }
}

/// Honours query cancel and `statement_timeout` between batches.
fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

fn device() -> DeviceSpec {
    settings::string(&settings::DEVICE)
        .unwrap_or_else(|| "cpu".into())
        .parse::<DeviceSpec>()
        .or_raise()
}

/// The engine for `model` (resolved as in [`resolve_name`]), loading it on first use.
pub fn engine(model: Option<&str>) -> Arc<Engine> {
    model_and_heads(model).0
}

/// The engine for `model` and its task heads (`None` when the directory has none).
pub fn model_and_heads(model: Option<&str>) -> (Arc<Engine>, Option<Arc<TaskHeads>>) {
    let name = resolve_name(model);
    if !valid_name(&name) {
        unknown_model(&name);
    }
    let dir = settings::model_dir().join(&name);
    let device = device();
    let options = engine_options();
    let cache = cache();
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = reg.get_mut(&name) {
        let now = stamp(&loaded.weights);
        if now != loaded.stamp {
            let fingerprint = sha256_file(&loaded.weights).or_raise();
            if fingerprint != loaded.engine.fingerprint() {
                let old = loaded.engine.fingerprint().to_string();
                drop(reg);
                raise(PlmError::bad_file(
                    dir.join(files::WEIGHTS),
                    format!(
                        "the weights of model '{name}' changed on disk (loaded fingerprint {old}, now {fingerprint}); \
                         results of IMMUTABLE functions would silently change: install new weights under a new model name"
                    ),
                ));
            }
            loaded.stamp = now;
        }
        let heads_path = dir.join(head_files::WEIGHTS);
        if stamp(&heads_path) != loaded.heads_stamp {
            drop(reg);
            raise(PlmError::bad_file(
                heads_path,
                format!(
                    "the task heads of model '{name}' changed on disk; results of IMMUTABLE functions would \
                     silently change: install new heads under a new model name"
                ),
            ));
        }
        if loaded.engine.device_spec() == device {
            loaded.engine.set_options(options);
            return (loaded.engine.clone(), loaded.heads.clone());
        }
    }
    drop(reg);
    if !dir.is_dir() {
        unknown_model(&name);
    }
    let checkpoint = Checkpoint::open(&dir).or_raise();
    let engine = Arc::new(
        Engine::from_checkpoint(checkpoint, device, candle_core::DType::F32, options, cache)
            .or_raise(),
    );
    let heads_stamp = stamp(&dir.join(head_files::WEIGHTS));
    let heads = TaskHeads::open(&dir, &candle_core::Device::Cpu)
        .or_raise()
        .map(Arc::new);
    let weights = dir.join(files::WEIGHTS);
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    reg.insert(
        name,
        Loaded {
            engine: engine.clone(),
            heads: heads.clone(),
            stamp: stamp(&weights),
            weights,
            heads_stamp,
        },
    );
    (engine, heads)
}

/// Whether a model is loaded in this backend.
pub fn is_loaded(name: &str) -> bool {
    registry()
        .lock()
        .map(|r| r.contains_key(name))
        .unwrap_or(false)
}
