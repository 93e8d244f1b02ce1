//! Loaded models by directory, shared by the threads of one process.
//!
//! Engines stay loaded for the life of the registry. Before each use the weights file is
//! checked (size and modification time); a changed file whose fingerprint differs from the
//! loaded one is an error, and so is a changed heads file: one model name must always mean the
//! same weights, because the SQL functions built on it are IMMUTABLE.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use plm_model::checkpoint::{files, sha256_file};
use plm_model::heads::files as head_files;
use plm_model::TaskHeads;
use plm_model::{
    Checkpoint, DeviceSpec, EmbeddingCache, Engine, EngineOptions, LoadOptions, PlmError,
    Precision, Result,
};

/// A loaded model: the engine and its task heads (`None` when the directory has none).
#[derive(Clone)]
pub struct LoadedModel {
    /// The inference engine.
    pub engine: Arc<Engine>,
    /// The task heads.
    pub heads: Option<Arc<TaskHeads>>,
}

type Stamp = (u64, Option<SystemTime>);

struct Entry {
    model: LoadedModel,
    weights: PathBuf,
    stamp: Stamp,
    /// Stamps of `heads.safetensors` and `heads.json` (the blend lives in the latter).
    heads_stamp: (Stamp, Stamp),
}

/// Models loaded in this process, keyed by directory, all sharing one embedding cache.
pub struct ModelRegistry {
    models: Mutex<HashMap<PathBuf, Entry>>,
    cache: Arc<EmbeddingCache>,
}

/// Says in the server's log (PostgreSQL's log) when a model's precision has no fast kernel on
/// this CPU (one without AVX2): the portable twin gives the same results, tens to hundreds of
/// times more slowly.
fn warn_if_portable(name: &str, precision: Precision) {
    if let Some((kernel, true)) = plm_model::esm::cpu_kernel(precision) {
        eprintln!(
            "plm-serve[{}]: model \"{name}\" is {precision:?} and this CPU has no fast kernel \
             for it: its projections run on the {kernel} kernel, far slower than the f32 \
             model (same results); use the f32 model on this machine",
            std::process::id()
        );
    }
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.modified().ok()))
        .unwrap_or((0, None))
}

fn heads_stamp(dir: &Path) -> (Stamp, Stamp) {
    (
        stamp(&dir.join(head_files::WEIGHTS)),
        stamp(&dir.join(head_files::CONFIG)),
    )
}

impl ModelRegistry {
    /// An empty registry whose engines share `cache`.
    pub fn new(cache: Arc<EmbeddingCache>) -> Self {
        Self {
            models: Mutex::new(HashMap::new()),
            cache,
        }
    }

    /// The shared embedding cache.
    pub fn cache(&self) -> &Arc<EmbeddingCache> {
        &self.cache
    }

    /// A handle on the model in `dir` whose calls run under `options`, loaded with `load` on
    /// first use (a model loaded on another device is loaded again; other threads do not
    /// reload it).
    ///
    /// `name` is only used in messages.
    pub fn get(
        &self,
        dir: &Path,
        name: &str,
        load: LoadOptions,
        options: EngineOptions,
    ) -> Result<LoadedModel> {
        {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = models.get_mut(dir) {
                Self::check_unchanged(entry, dir, name)?;
                if entry.model.engine.device_spec() == load.device {
                    // This request's options on a handle of its own: the shared engine is
                    // never written to, so concurrent requests cannot see each other's.
                    return Ok(LoadedModel {
                        engine: Arc::new(entry.model.engine.with_options(options)),
                        heads: entry.model.heads.clone(),
                    });
                }
            }
        }
        // Loading takes a while: done without holding the lock.
        let checkpoint = Checkpoint::open(dir)?;
        if load.device == DeviceSpec::Cpu {
            warn_if_portable(name, checkpoint.precision());
        }
        let engine = Arc::new(Engine::from_checkpoint(
            checkpoint,
            load,
            options,
            self.cache.clone(),
        )?);
        let heads_stamp = heads_stamp(dir);
        let heads = TaskHeads::open(dir, &candle_core::Device::Cpu)?.map(Arc::new);
        let weights = dir.join(files::WEIGHTS);
        let model = LoadedModel { engine, heads };
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.insert(
            dir.to_path_buf(),
            Entry {
                model: model.clone(),
                stamp: stamp(&weights),
                weights,
                heads_stamp,
            },
        );
        Ok(model)
    }

    fn check_unchanged(entry: &mut Entry, dir: &Path, name: &str) -> Result<()> {
        let now = stamp(&entry.weights);
        if now != entry.stamp {
            let fingerprint = sha256_file(&entry.weights)?;
            let loaded = &entry.model.engine.checkpoint().weights_sha256;
            if fingerprint != *loaded {
                return Err(PlmError::bad_file(
                    dir.join(files::WEIGHTS),
                    format!(
                        "the weights of model '{name}' changed on disk (loaded fingerprint {loaded}, now {fingerprint}); \
                         results of IMMUTABLE functions would silently change: install new weights under a new model name"
                    ),
                ));
            }
            entry.stamp = now;
        }
        let heads_path = dir.join(head_files::WEIGHTS);
        if heads_stamp(dir) != entry.heads_stamp {
            return Err(PlmError::bad_file(
                heads_path,
                format!(
                    "the task heads of model '{name}' changed on disk; results of IMMUTABLE functions would \
                     silently change: install new heads under a new model name"
                ),
            ));
        }
        Ok(())
    }

    /// Directories of the loaded models, sorted.
    pub fn loaded(&self) -> Vec<PathBuf> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirs: Vec<PathBuf> = models.keys().cloned().collect();
        dirs.sort();
        dirs
    }

    /// Whether the model in `dir` is loaded.
    pub fn is_loaded(&self, dir: &Path) -> bool {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.contains_key(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changed `heads.json` (a refitted blend, say) would change the answers of IMMUTABLE
    /// functions as surely as new weights: it is refused until the model is renamed.
    #[test]
    fn changed_heads_configuration_is_refused() {
        let shipped = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("../models/plm-default");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let registry = ModelRegistry::new(Arc::new(EmbeddingCache::new(0)));
        let get = || registry.get(&dir, "m", LoadOptions::default(), EngineOptions::default());
        assert!(get().unwrap().heads.is_some());
        assert!(get().is_ok(), "unchanged files load from the registry");
        let config = dir.join(head_files::CONFIG);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push('\n');
        std::fs::write(&config, text).unwrap();
        let err = get().err().expect("changed heads.json is refused");
        assert!(err.to_string().contains("task heads"), "{err}");
    }
}
