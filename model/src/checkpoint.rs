//! The checkpoint directory shared by the trainer and the extension.
//!
//! A directory holds Hugging Face compatible files — `config.json`, `model.safetensors`,
//! `tokenizer.json` (or ESM's `vocab.txt`) — plus an optional `manifest.json` with the name,
//! provenance and the SHA-256 fingerprint of the weights. A plain Hugging Face snapshot of any
//! ESM-2 size loads unchanged.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::EsmConfig;
use crate::error::{PlmError, Result};
use crate::esm::EsmForMaskedLM;
use crate::tokenizer::ProteinTokenizer;

/// File names inside a checkpoint directory.
pub mod files {
    /// Model hyper-parameters.
    pub const CONFIG: &str = "config.json";
    /// Weights.
    pub const WEIGHTS: &str = "model.safetensors";
    /// Tokenizer of the `tokenizers` crate.
    pub const TOKENIZER: &str = "tokenizer.json";
    /// ESM vocabulary of Hugging Face snapshots.
    pub const VOCAB: &str = "vocab.txt";
    /// Provenance and fingerprint.
    pub const MANIFEST: &str = "manifest.json";
}

/// `manifest.json`: what a checkpoint is and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model name used in SQL.
    pub name: String,
    /// Architecture, e.g. `EsmForMaskedLM`.
    #[serde(default)]
    pub architecture: String,
    /// Number of parameters of the language model.
    #[serde(default)]
    pub parameters: usize,
    /// Width of the embeddings.
    #[serde(default)]
    pub embedding_dim: usize,
    /// Number of transformer blocks.
    #[serde(default)]
    pub num_layers: usize,
    /// Task heads stored beside the model (e.g. `ec`, `go_mf`, `ppi`, `binding`).
    #[serde(default)]
    pub heads: Vec<String>,
    /// SHA-256 of `model.safetensors`, hex.
    #[serde(default)]
    pub fingerprint: String,
    /// The precision the model runs at (absent: `f32`). Part of the model's identity: see
    /// [`Precision`].
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Training provenance: data, steps, metrics, command line.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// The arithmetic a model is installed to run at.
///
/// A model at a precision other than `f32` is a model of its own: its weights are the
/// quantised ones (every execution path uses them) and its [`Checkpoint::fingerprint`]
/// differs from the f32 model's, so cached and stored results never mix precisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Full precision.
    #[default]
    F32,
    /// Linear layers of the transformer blocks in int8 (weights symmetric per output channel,
    /// activations per token over the token's own range); embeddings, norms, attention and
    /// heads in f32.
    Int8,
    /// Linear layers of the transformer blocks in bfloat16 (weights and activations rounded,
    /// products summed in f32); embeddings, norms, attention and heads in f32.
    Bf16,
}

impl Precision {
    /// Whether this is the default full precision.
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    /// The name used in manifests and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Int8 => "int8",
            Self::Bf16 => "bf16",
        }
    }

    /// The identity of a model with weights `weights_sha256` at this precision: the weights'
    /// hash itself for f32 (so existing fingerprints stay valid), else the SHA-256 of the hash
    /// and the name of the precision's arithmetic (which says its revision).
    pub fn identity(&self, weights_sha256: &str) -> String {
        match self {
            Self::F32 => weights_sha256.to_owned(),
            other => {
                let digest = Sha256::digest(format!("{weights_sha256}/{}", other.arithmetic()));
                hex::encode(digest)
            }
        }
    }

    /// The precision's name and, where its arithmetic changed after it was introduced, the
    /// revision, so that results of the old arithmetic are never mixed with the new ones
    /// (int8 activations are rounded over each row's own range; up to 0.3.0, symmetrically).
    fn arithmetic(&self) -> &'static str {
        match self {
            Self::Int8 => "int8/asymmetric-activations",
            other => other.as_str(),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = PlmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "int8" | "w8a8" => Ok(Self::Int8),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(PlmError::InvalidArgument(format!(
                "unknown precision '{other}' (valid: f32, int8, bf16)"
            ))),
        }
    }
}

impl Manifest {
    /// Sets the fields that follow from the model configuration (parameters, width, depth,
    /// and the architecture when none is recorded).
    pub fn fill_from_config(&mut self, config: &EsmConfig) {
        if self.architecture.is_empty() {
            self.architecture = config
                .architectures
                .first()
                .cloned()
                .unwrap_or_else(|| "EsmForMaskedLM".into());
        }
        self.parameters = config.parameter_count();
        self.embedding_dim = config.hidden_size;
        self.num_layers = config.num_hidden_layers;
    }
}

/// A checkpoint directory, read and verified but with weights not yet loaded.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// Parsed `config.json`.
    pub config: EsmConfig,
    /// The tokenizer.
    pub tokenizer: ProteinTokenizer,
    /// Parsed `manifest.json`, when present.
    pub manifest: Option<Manifest>,
    /// The model's identity: the SHA-256 of `model.safetensors` at f32, derived from it and the
    /// precision otherwise ([`Precision::identity`]). Cached and stored results are keyed by it.
    pub fingerprint: String,
    /// SHA-256 of `model.safetensors`, hex.
    pub weights_sha256: String,
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(PlmError::MissingFile {
            path,
            what: what.into(),
        })
    }
}

/// SHA-256 of a file, hex encoded. Remembered per process by file identity (device, inode, size,
/// modification time), so listing models does not re-read multi-gigabyte weights on every call;
/// a replaced or rewritten file has a new identity and is hashed again.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{Mutex, OnceLock};
    type Identity = (u64, u64, u64, i64, i64);
    static KNOWN: OnceLock<Mutex<HashMap<Identity, String>>> = OnceLock::new();
    let identity = std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
    let known = KNOWN.get_or_init(Default::default);
    if let Some(hit) = identity.and_then(|id| {
        known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }) {
        return Ok(hit);
    }
    let fingerprint = hash_file(path)?;
    if let Some(id) = identity {
        known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, fingerprint.clone());
    }
    Ok(fingerprint)
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| PlmError::Io {
        path: path.into(),
        source: e,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| PlmError::Io {
            path: path.into(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads and parses a JSON file, naming the file in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| PlmError::bad_file(path, e))?;
    serde_json::from_str(&text).map_err(|e| PlmError::bad_file(path, e))
}

/// Writes a value as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| PlmError::bad_file(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| PlmError::Io {
        path: path.into(),
        source: e,
    })
}

impl Checkpoint {
    /// Opens a checkpoint directory: parses the config, tokenizer and manifest, fingerprints the
    /// weights and checks them against the manifest.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(PlmError::MissingFile {
                path: dir,
                what: "checkpoint directory".into(),
            });
        }
        let config_path = require(dir.join(files::CONFIG), "model configuration (config.json)")?;
        let config: EsmConfig = read_json(&config_path)?;
        config
            .validate()
            .map_err(|reason| PlmError::bad_file(&config_path, reason))?;
        let tokenizer = if dir.join(files::TOKENIZER).is_file() {
            ProteinTokenizer::from_file(&dir.join(files::TOKENIZER))?
        } else if dir.join(files::VOCAB).is_file() {
            ProteinTokenizer::from_vocab_file(&dir.join(files::VOCAB))?
        } else {
            return Err(PlmError::MissingFile {
                path: dir.join(files::TOKENIZER),
                what: "tokenizer (tokenizer.json or vocab.txt)".into(),
            });
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(PlmError::bad_file(
                dir.join(files::CONFIG),
                format!(
                    "vocab_size {} is smaller than the tokenizer's {} tokens",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            ));
        }
        let weights = require(
            dir.join(files::WEIGHTS),
            "model weights (model.safetensors)",
        )?;
        let weights_sha256 = sha256_file(&weights)?;
        let manifest_path = dir.join(files::MANIFEST);
        let manifest = if manifest_path.is_file() {
            let m: Manifest = read_json(&manifest_path)?;
            if !m.fingerprint.is_empty() && m.fingerprint != weights_sha256 {
                return Err(PlmError::bad_file(
                    &weights,
                    format!(
                        "SHA-256 {} does not match the fingerprint {} recorded in manifest.json (weights replaced or corrupt)",
                        weights_sha256, m.fingerprint
                    ),
                ));
            }
            Some(m)
        } else {
            None
        };
        let fingerprint = manifest
            .as_ref()
            .map_or(Precision::F32, |m| m.precision)
            .identity(&weights_sha256);
        Ok(Self {
            dir,
            config,
            tokenizer,
            manifest,
            fingerprint,
            weights_sha256,
        })
    }

    /// The model name: the manifest's, else the directory name.
    pub fn name(&self) -> String {
        match &self.manifest {
            Some(m) if !m.name.is_empty() => m.name.clone(),
            _ => self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        }
    }

    /// Path of the weights file.
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(files::WEIGHTS)
    }

    /// Loads the weights (memory-mapped) onto `device` in `dtype`.
    #[allow(unsafe_code)] // memory-mapped safetensors
    pub fn load_model(&self, device: &Device, dtype: DType) -> Result<EsmForMaskedLM> {
        let weights = self.weights_path();
        // SAFETY: the file is memory-mapped read-only; it must not be modified while loaded,
        // which the fingerprint check at open time and the docs require of operators.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
            .map_err(|e| PlmError::bad_file(&weights, e))?;
        let mut model =
            EsmForMaskedLM::load(vb, &self.config).map_err(|e| PlmError::bad_file(&weights, e))?;
        model
            .quantize(self.precision())
            .map_err(|e| PlmError::bad_file(&weights, e))?;
        Ok(model)
    }

    /// A manifest describing this checkpoint (the stored one, or one derived from the config).
    pub fn describe(&self) -> Manifest {
        let mut m = self.manifest.clone().unwrap_or_default();
        if m.name.is_empty() {
            m.name = self.name();
        }
        m.fill_from_config(&self.config);
        m.fingerprint = self.weights_sha256.clone();
        m
    }

    /// The precision the checkpoint is installed at.
    pub fn precision(&self) -> Precision {
        self.manifest
            .as_ref()
            .map_or(Precision::F32, |m| m.precision)
    }
}

/// Writes a complete checkpoint directory from a var map of `EsmForMaskedLM` weights.
///
/// Writes to a temporary sibling directory first and renames it into place, so a crash never
/// leaves a half-written checkpoint under the final name.
pub fn save_checkpoint(
    dir: &Path,
    config: &EsmConfig,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    manifest: Manifest,
) -> Result<()> {
    save_checkpoint_with(dir, config, tensors, manifest, |_| Ok(()))
}

/// Like [`save_checkpoint`], with `extra` writing further files (optimizer state, task heads)
/// into the temporary directory before it is renamed into place.
pub fn save_checkpoint_with(
    dir: &Path,
    config: &EsmConfig,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    mut manifest: Manifest,
    extra: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| PlmError::Io {
        path: parent.into(),
        source: e,
    })?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| PlmError::Io {
        path: tmp.clone(),
        source: e,
    })?;
    write_json(&tmp.join(files::CONFIG), config)?;
    let weights = tmp.join(files::WEIGHTS);
    candle_core::safetensors::save(tensors, &weights)
        .map_err(|e| PlmError::bad_file(&weights, e))?;
    ProteinTokenizer::esm().save(&tmp.join(files::TOKENIZER))?;
    manifest.fingerprint = sha256_file(&weights)?;
    manifest.fill_from_config(config);
    write_json(&tmp.join(files::MANIFEST), &manifest)?;
    extra(&tmp).map_err(|reason| PlmError::bad_file(&tmp, reason))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| PlmError::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| PlmError::Io {
        path: dir.into(),
        source: e,
    })
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn fingerprints_are_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, b"weights one").unwrap();
        let first = sha256_file(&path).unwrap();
        assert_eq!(first, hash_file(&path).unwrap());
        assert_eq!(sha256_file(&path).unwrap(), first);
        // Same size, new content: a new modification time, so it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"weights two").unwrap();
        let second = sha256_file(&path).unwrap();
        assert_ne!(second, first);
        assert_eq!(second, hash_file(&path).unwrap());
    }
}
