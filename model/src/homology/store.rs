//! The file envelope of every reference set: postcard, gzip-compressed, with a magic string and
//! a format version checked on reading. Reading is bounded so that a corrupt or hostile file
//! cannot inflate without limit.

use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{PlmError, Result};

/// First field of every reference-set file.
pub const MAGIC: &str = "plm-reference-set";
/// Format version of the reference-set files.
pub const VERSION: u32 = 1;
/// Largest decompressed reference set read.
const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;

/// Writes `value` to `path` (deterministic bytes for the same value).
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let raw = postcard::to_allocvec(value).map_err(|e| PlmError::Internal(e.to_string()))?;
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

/// Decodes file bytes written by [`write`]; the error says what is wrong with them.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED_BYTES)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not a gzip reference set: {e}"))?;
    postcard::from_bytes(&raw).map_err(|e| format!("corrupt reference set: {e}"))
}

/// Checks the magic string, version and task of a decoded file.
pub fn check_header(
    magic: &str,
    version: u32,
    task: &str,
    expected: impl Fn(&str) -> bool,
) -> std::result::Result<(), String> {
    if magic != MAGIC || version != VERSION {
        return Err("not a pg_plm reference set of this version".into());
    }
    if !expected(task) {
        return Err(format!("a reference set of another task ('{task}')"));
    }
    Ok(())
}
