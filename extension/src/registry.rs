//! Model names and this backend's own models.
//!
//! A model name is a sub-directory of `plm.model_dir`; it resolves to a [`ModelRef`] that is
//! computed either by the inference server or (for debugging) by this backend's
//! [`ModelRegistry`] (which refuses weights or heads that changed on disk under a loaded name).

use std::sync::{Arc, OnceLock};

use plm_model::checkpoint::files;
use plm_model::{DeviceSpec, EmbeddingCache};
use plm_serve::{ExecOptions, ModelRef, ModelRegistry, RequestSettings};

use crate::errors::{undefined_object, OrRaise};
use crate::settings;

/// Name of the shipped default model.
pub const DEFAULT_MODEL_NAME: &str = "plm-default";

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

/// The default model as [`resolve_name`] would pick it, without raising errors (for the
/// worker, which must not fail on a missing or ambiguous default).
pub fn default_model_ref() -> Option<ModelRef> {
    let name = settings::string(&settings::DEFAULT_MODEL).or_else(|| {
        let models = available_models();
        if models.iter().any(|m| m == DEFAULT_MODEL_NAME) {
            Some(DEFAULT_MODEL_NAME.to_string())
        } else if models.len() == 1 {
            models.into_iter().next()
        } else {
            None
        }
    })?;
    let dir = settings::model_dir().join(&name);
    let device = configured_device().ok()?;
    (valid_name(&name) && dir.is_dir()).then_some(ModelRef { dir, name, device })
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

/// The settings of this session that decide whether a request is accepted.
pub fn request_settings() -> RequestSettings {
    RequestSettings {
        long_sequences: settings::LONG_SEQUENCE_POLICY.get().into(),
        max_length: settings::MAX_LENGTH.get().max(1) as u32,
    }
}

/// Options of in-backend execution.
pub fn exec_options() -> ExecOptions {
    ExecOptions {
        max_tokens_per_batch: settings::MAX_TOKENS_PER_BATCH.get().max(64) as usize,
        threads: settings::THREADS.get().max(0) as usize,
        max_request_bytes: (settings::max_request_mb() << 20) as usize,
        interrupt_check: Some(check_interrupts),
    }
}

/// Honours query cancel and `statement_timeout` between batches: PostgreSQL raises the cancel
/// itself (its error unwinds to the function's boundary, as every PostgreSQL error does), so
/// this never asks the engine to stop.
pub fn check_interrupts() -> bool {
    pgrx::check_for_interrupts!();
    false
}

/// `plm.device`, parsed.
fn configured_device() -> Result<DeviceSpec, plm_model::PlmError> {
    settings::string(&settings::DEVICE)
        .unwrap_or_else(|| "cpu".into())
        .parse::<DeviceSpec>()
}

/// The model `model` resolves to (as in [`resolve_name`]): its directory and device.
pub fn model_ref(model: Option<&str>) -> ModelRef {
    let name = resolve_name(model);
    if !valid_name(&name) {
        unknown_model(&name);
    }
    let dir = settings::model_dir().join(&name);
    if !dir.is_dir() {
        unknown_model(&name);
    }
    ModelRef {
        dir,
        name,
        device: configured_device().or_raise(),
    }
}

/// The models loaded in this backend (in-backend inference).
pub fn local_registry() -> &'static ModelRegistry {
    static REGISTRY: OnceLock<ModelRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| ModelRegistry::new(cache()))
}
