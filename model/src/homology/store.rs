//! The file envelope of every reference set: postcard, gzip-compressed, with a magic string, a
//! format version and the task checked on reading, then the set's own labels and its proteins.
//! Reading is bounded so that a corrupt or hostile file cannot inflate without limit.

use std::io::Read;
use std::path::Path;

use plm_align::Reference;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{PlmError, Result};

/// First field of every reference-set file.
const MAGIC: &str = "plm-reference-set";
/// Format version of the reference-set files.
const VERSION: u32 = 1;
/// Largest decompressed reference set read.
const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// The stored form: a header, the labels of the set's kind, and the proteins
/// ([`plm_align::Reference::to_bytes`]). Postcard writes nested structs as their fields in
/// order, so `labels` is laid out as if its fields were the envelope's own.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    magic: String,
    version: u32,
    task: String,
    source: String,
    labels: T,
    proteins: Vec<u8>,
}

/// A decoded reference-set file.
#[derive(Debug)]
pub struct Opened<T> {
    /// What the labels are.
    pub task: String,
    /// Where the proteins and labels come from.
    pub source: String,
    /// The labels of the set's kind.
    pub labels: T,
    /// The searchable proteins.
    pub proteins: Reference,
}

/// Writes a reference set to `path` (deterministic bytes for the same content).
pub fn save<T: Serialize>(
    path: &Path,
    task: &str,
    source: &str,
    labels: &T,
    proteins: &Reference,
) -> Result<()> {
    let envelope = Envelope {
        magic: MAGIC.into(),
        version: VERSION,
        task: task.into(),
        source: source.into(),
        labels,
        proteins: proteins
            .to_bytes()
            .map_err(|e| PlmError::Internal(e.to_string()))?,
    };
    let raw = postcard::to_allocvec(&envelope).map_err(|e| PlmError::Internal(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &raw)
        .and_then(|_| gz.finish())
        .and_then(|bytes| std::fs::write(path, bytes))
        .map_err(|source| PlmError::Io {
            path: path.into(),
            source,
        })
}

/// Reads the file bytes at `path` and parses them with `parse`.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> std::result::Result<T, String>,
) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| PlmError::Io {
        path: path.into(),
        source,
    })?;
    parse(&bytes).map_err(|reason| PlmError::bad_file(path, reason))
}

/// Decodes file bytes written by [`save`] for a task that `accept` allows; the error says what
/// is wrong with them.
pub fn open<T: DeserializeOwned>(
    bytes: &[u8],
    accept: impl Fn(&str) -> bool,
) -> std::result::Result<Opened<T>, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not a gzip reference set: {e}"))?;
    let envelope: Envelope<T> =
        postcard::from_bytes(&raw).map_err(|e| format!("corrupt reference set: {e}"))?;
    if envelope.magic != MAGIC || envelope.version != VERSION {
        return Err("not a pg_plm reference set of this version".into());
    }
    if !accept(&envelope.task) {
        return Err(format!(
            "a reference set of another task ('{}')",
            envelope.task
        ));
    }
    Ok(Opened {
        task: envelope.task,
        source: envelope.source,
        labels: envelope.labels,
        proteins: Reference::from_bytes(&envelope.proteins).map_err(|e| e.to_string())?,
    })
}
