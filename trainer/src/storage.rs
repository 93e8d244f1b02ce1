//! Where the trainer reads and writes: local paths, or objects in S3 and S3-compatible stores
//! (`s3://bucket/key`) through the `object_store` crate.
//!
//! Credentials, region and endpoint come from the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` for other stores, `AWS_ALLOW_HTTP=true` for plain-HTTP endpoints).
//! Requests are retried with backoff by `object_store`; sequential reads fetch ranges of
//! [`READ_CHUNK`] bytes, so a long stream survives a dropped connection by re-asking for the
//! range it was reading. Every error names the URL.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::io::AsyncWriteExt;

/// Bytes per ranged read of a streamed object.
pub const READ_CHUNK: u64 = 8 << 20;

/// Errors of reading and writing locations.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Not a path, `file://` or `s3://` URL.
    #[error("{url}: {reason}; give a path, file:///path or s3://bucket/key")]
    BadUrl {
        /// The location as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such bucket or key.
    #[error("{url}: not found (no such bucket or key)")]
    NotFound {
        /// The location.
        url: String,
        /// The store's answer.
        source: object_store::Error,
    },
    /// The store refused the credentials.
    #[error(
        "{url}: access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (and AWS_SESSION_TOKEN): {source}"
    )]
    Denied {
        /// The location.
        url: String,
        /// The store's answer.
        source: object_store::Error,
    },
    /// Any other failure of the store (after retries).
    #[error("{url}: {source}")]
    Store {
        /// The location.
        url: String,
        /// The store's answer.
        source: object_store::Error,
    },
    /// An object shorter than its listed size (it changed while it was read).
    #[error("{url}: truncated: {size} bytes listed, the read stopped at {at}")]
    Truncated {
        /// The location.
        url: String,
        /// Listed size.
        size: u64,
        /// Bytes received.
        at: u64,
    },
    /// A local file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl StorageError {
    fn from_store(url: &str, source: object_store::Error) -> Self {
        let url = url.to_string();
        match source {
            object_store::Error::NotFound { .. } => Self::NotFound { url, source },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Self::Denied { url, source },
            // Some stores answer a bad signature as a generic 403.
            other if looks_denied(&other) => Self::Denied { url, source: other },
            other => Self::Store { url, source: other },
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

fn looks_denied(e: &object_store::Error) -> bool {
    let text = e.to_string();
    [
        "403 Forbidden",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// An object in S3 (or an S3-compatible store).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    /// Bucket name.
    pub bucket: String,
    /// Key (no leading slash; may be empty for the bucket's root).
    pub key: String,
}

impl ObjectUrl {
    /// The object `name` below this key (as a directory).
    pub fn join(&self, name: &str) -> Self {
        let key = if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", self.key.trim_end_matches('/'), name)
        };
        Self {
            bucket: self.bucket.clone(),
            key,
        }
    }

    fn path(&self) -> ObjectPath {
        ObjectPath::from(self.key.as_str())
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// A file or directory: on this machine, or in object storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local path.
    Local(PathBuf),
    /// An object (or, for directories, a key prefix).
    Object(ObjectUrl),
}

impl Location {
    /// The location `name` inside this one.
    pub fn join(&self, name: &str) -> Self {
        match self {
            Self::Local(p) => Self::Local(p.join(name)),
            Self::Object(o) => Self::Object(o.join(name)),
        }
    }

    /// The local path, if this is one.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Object(_) => None,
        }
    }

    /// Whether the name ends in `.gz`.
    pub fn is_gzip(&self) -> bool {
        match self {
            Self::Local(p) => p.extension().is_some_and(|e| e == "gz"),
            Self::Object(o) => o.key.ends_with(".gz"),
        }
    }

    /// The last component of the name.
    pub fn file_name(&self) -> String {
        match self {
            Self::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Self::Object(o) => o.key.rsplit('/').next().unwrap_or_default().to_string(),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Self::Local(p)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Self::Local(p.to_path_buf())
    }
}

impl FromStr for Location {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| StorageError::BadUrl {
            url: s.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            if s.is_empty() {
                return Err(bad("empty location"));
            }
            return Ok(Self::Local(PathBuf::from(s)));
        };
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("a file:// URL needs an absolute path (file:///...)"));
                }
                Ok(Self::Local(PathBuf::from(rest)))
            }
            "s3" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket"));
                }
                Ok(Self::Object(ObjectUrl {
                    bucket: bucket.to_string(),
                    key: key.trim_matches('/').to_string(),
                }))
            }
            other => Err(bad(&format!(
                "unsupported scheme '{other}' (this build reads and writes file:// and s3://)"
            ))),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Object(o) => o.fmt(f),
        }
    }
}

impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The I/O runtime that drives the object store's requests (one per process, started on first
/// use; callers block on it).
fn runtime() -> Result<&'static tokio::runtime::Runtime, StorageError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| StorageError::Io {
        path: "object storage".into(),
        source: std::io::Error::other(format!("cannot start the I/O runtime: {e}")),
    })
}

/// The store of a bucket (built once per bucket from the environment).
fn store(url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>, StorageError> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = stores.get(&url.bucket) {
        return Ok(s.clone());
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    let built: Arc<dyn ObjectStore> =
        Arc::new(builder.build().map_err(|e| StorageError::Store {
            url: url.to_string(),
            source: e,
        })?);
    stores.insert(url.bucket.clone(), built.clone());
    Ok(built)
}

/// Size in bytes of an object.
pub fn object_size(url: &ObjectUrl) -> Result<u64, StorageError> {
    let s = store(url)?;
    let meta = runtime()?
        .block_on(s.head(&url.path()))
        .map_err(|e| StorageError::from_store(&url.to_string(), e))?;
    Ok(meta.size)
}

/// Reads an object sequentially in ranged requests of [`READ_CHUNK`] bytes.
pub struct ObjectReader {
    url: ObjectUrl,
    store: Arc<dyn ObjectStore>,
    size: u64,
    offset: u64,
    chunk: Bytes,
}

impl ObjectReader {
    /// Opens an object (fails now if it does not exist).
    pub fn open(url: &ObjectUrl) -> Result<Self, StorageError> {
        let size = object_size(url)?;
        Ok(Self {
            url: url.clone(),
            store: store(url)?,
            size,
            offset: 0,
            chunk: Bytes::new(),
        })
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.chunk.is_empty() {
            if self.offset >= self.size {
                return Ok(0);
            }
            let end = (self.offset + READ_CHUNK).min(self.size);
            let url = self.url.to_string();
            let got = runtime()
                .map_err(std::io::Error::other)?
                .block_on(self.store.get_range(&self.url.path(), self.offset..end))
                .map_err(|e| std::io::Error::other(StorageError::from_store(&url, e)))?;
            if got.is_empty() {
                return Err(std::io::Error::other(StorageError::Truncated {
                    url,
                    size: self.size,
                    at: self.offset,
                }));
            }
            self.offset += got.len() as u64;
            self.chunk = got;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Opens a file or object for sequential reading.
pub fn open_read(location: &Location) -> Result<Box<dyn Read + Send>, StorageError> {
    match location {
        Location::Local(p) => Ok(Box::new(
            std::fs::File::open(p).map_err(|e| StorageError::io(p, e))?,
        )),
        Location::Object(o) => Ok(Box::new(ObjectReader::open(o)?)),
    }
}

/// The whole content of an object, or `None` if it does not exist.
pub fn get_optional(url: &ObjectUrl) -> Result<Option<Bytes>, StorageError> {
    let s = store(url)?;
    let path = url.path();
    let result = runtime()?.block_on(async { s.get(&path).await?.bytes().await });
    match result {
        Ok(b) => Ok(Some(b)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(StorageError::from_store(&url.to_string(), e)),
    }
}

/// Writes an object in one request (atomic: readers see the old or the new content).
pub fn put(url: &ObjectUrl, bytes: Vec<u8>) -> Result<(), StorageError> {
    let s = store(url)?;
    runtime()?
        .block_on(s.put(&url.path(), PutPayload::from(bytes)))
        .map_err(|e| StorageError::from_store(&url.to_string(), e))?;
    Ok(())
}

/// Uploads a local file (multipart above 64 MiB); the object appears only when complete.
pub fn upload_file(local: &Path, url: &ObjectUrl) -> Result<(), StorageError> {
    let s = store(url)?;
    let mut file = std::fs::File::open(local).map_err(|e| StorageError::io(local, e))?;
    let name = url.to_string();
    runtime()?.block_on(async {
        let mut writer = object_store::buffered::BufWriter::with_capacity(s, url.path(), 64 << 20);
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| StorageError::io(local, e))?;
            if n == 0 {
                break;
            }
            if let Err(e) = writer.write_all(&buf[..n]).await {
                writer.abort().await.ok();
                return Err(io_to_storage(&name, e));
            }
        }
        writer.shutdown().await.map_err(|e| io_to_storage(&name, e))
    })
}

/// The storage error inside an I/O error raised by `object_store`'s writer.
fn io_to_storage(url: &str, e: std::io::Error) -> StorageError {
    match e
        .into_inner()
        .map(|inner| inner.downcast::<object_store::Error>())
    {
        Some(Ok(store_error)) => StorageError::from_store(url, *store_error),
        Some(Err(other)) => StorageError::Io {
            path: url.to_string(),
            source: std::io::Error::other(other),
        },
        None => StorageError::Io {
            path: url.to_string(),
            source: std::io::Error::other("write failed"),
        },
    }
}

/// Keys (relative to `prefix/`) of the objects below a prefix, sorted.
pub fn list(prefix: &ObjectUrl) -> Result<Vec<String>, StorageError> {
    let s = store(prefix)?;
    let base = prefix.path();
    let mut keys: Vec<String> = runtime()?
        .block_on(
            s.list(Some(&base))
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>(),
        )
        .map_err(|e| StorageError::from_store(&prefix.to_string(), e))?;
    let strip = format!("{}/", prefix.key.trim_end_matches('/'));
    for k in &mut keys {
        if let Some(rest) = k.strip_prefix(&strip) {
            *k = rest.to_string();
        }
    }
    keys.sort();
    Ok(keys)
}

/// Deletes an object (a missing one is not an error).
pub fn delete(url: &ObjectUrl) -> Result<(), StorageError> {
    let s = store(url)?;
    match runtime()?.block_on(s.delete(&url.path())) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(StorageError::from_store(&url.to_string(), e)),
    }
}

/// Deletes every object below a prefix.
pub fn delete_prefix(prefix: &ObjectUrl) -> Result<(), StorageError> {
    for key in list(prefix)? {
        delete(&prefix.join(&key))?;
    }
    Ok(())
}

/// Downloads the objects below `prefix` into the directory `to` (created; files replaced).
/// Returns how many there were; none is an error naming the prefix.
pub fn download_prefix(prefix: &ObjectUrl, to: &Path) -> Result<usize, StorageError> {
    let keys = list(prefix)?;
    if keys.is_empty() {
        return Err(StorageError::NotFound {
            url: prefix.to_string(),
            source: object_store::Error::NotFound {
                path: prefix.key.clone(),
                source: "no objects below this prefix".into(),
            },
        });
    }
    for key in &keys {
        let url = prefix.join(key);
        let dest = to.join(key);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
        }
        let mut reader = ObjectReader::open(&url)?;
        let tmp = dest.with_file_name(format!(
            ".{}.partial",
            url.key.rsplit('/').next().unwrap_or("object")
        ));
        let mut file = std::fs::File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
        let copied = std::io::copy(&mut reader, &mut file).map_err(|e| StorageError::Io {
            path: url.to_string(),
            source: e,
        })?;
        if copied != reader.size {
            return Err(StorageError::Truncated {
                url: url.to_string(),
                size: reader.size,
                at: copied,
            });
        }
        std::fs::rename(&tmp, &dest).map_err(|e| StorageError::io(&dest, e))?;
    }
    Ok(keys.len())
}

/// The directory under which objects are staged on this machine: `PLM_TRAIN_STAGING`, else
/// the system's temporary directory.
pub fn staging_root() -> PathBuf {
    std::env::var_os("PLM_TRAIN_STAGING")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("plm-train"))
}

/// A local directory for the object-store location `url` used by rank `rank`.
pub fn staging_dir(url: &ObjectUrl, purpose: &str, rank: usize) -> PathBuf {
    staging_root()
        .join(purpose)
        .join(&url.bucket)
        .join(url.key.replace('/', "__"))
        .join(format!("rank-{rank}"))
}

/// Pointer object that publishes a checkpoint stored under `checkpoints/` (see
/// [`crate::train_loop`]): the checkpoint directory `dir/last` of a run in object storage is
/// `dir/` + the pointer's `checkpoint`.
pub const LAST_POINTER: &str = "last.json";

/// A model directory given as a location, as a local directory: itself, or the objects below
/// the URL downloaded into a staging directory (a run's `RUN/last` follows the run's
/// [`LAST_POINTER`]).
pub fn local_model_dir(location: &Location, rank: usize) -> Result<PathBuf, StorageError> {
    let url = match location {
        Location::Local(p) => return Ok(p.clone()),
        Location::Object(o) => o,
    };
    let dir = staging_dir(url, "models", rank);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
    }
    let prefix = resolve_last(url)?.unwrap_or_else(|| url.clone());
    download_prefix(&prefix, &dir)?;
    Ok(dir)
}

/// Where `RUN/last` of a run in object storage really is (`None`: not a run's `last`).
pub fn resolve_last(url: &ObjectUrl) -> Result<Option<ObjectUrl>, StorageError> {
    let Some(run) = url
        .key
        .strip_suffix("/last")
        .or_else(|| (url.key == "last").then_some(""))
    else {
        return Ok(None);
    };
    let run = ObjectUrl {
        bucket: url.bucket.clone(),
        key: run.to_string(),
    };
    read_pointer(&run).map(|p| p.map(|(checkpoint, _)| checkpoint))
}

/// The checkpoint a run's [`LAST_POINTER`] publishes, with its step.
pub fn read_pointer(run: &ObjectUrl) -> Result<Option<(ObjectUrl, u64)>, StorageError> {
    let pointer = run.join(LAST_POINTER);
    let Some(bytes) = get_optional(&pointer)? else {
        return Ok(None);
    };
    let bad = |reason: String| StorageError::BadUrl {
        url: pointer.to_string(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a checkpoint pointer: {e}")))?;
    let dir = value["checkpoint"]
        .as_str()
        .ok_or_else(|| bad("no \"checkpoint\" in the pointer".into()))?;
    Ok(Some((run.join(dir), value["step"].as_u64().unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print() {
        let s3: Location = "s3://bucket/runs/a/".parse().unwrap();
        assert_eq!(
            s3,
            Location::Object(ObjectUrl {
                bucket: "bucket".into(),
                key: "runs/a".into()
            })
        );
        assert_eq!(s3.to_string(), "s3://bucket/runs/a");
        assert_eq!(s3.join("last").to_string(), "s3://bucket/runs/a/last");
        assert_eq!(
            "file:///tmp/x.fa.gz".parse::<Location>().unwrap(),
            Location::Local("/tmp/x.fa.gz".into())
        );
        assert!("file:///tmp/x.fa.gz".parse::<Location>().unwrap().is_gzip());
        assert_eq!(
            "data/x.fasta".parse::<Location>().unwrap(),
            Location::Local("data/x.fasta".into())
        );
        for bad in ["gs://b/k", "s3:///k", "file://relative", ""] {
            let e = bad.parse::<Location>().unwrap_err().to_string();
            assert!(e.contains("s3://bucket/key"), "{bad}: {e}");
        }
        let json = serde_json::to_string(&s3).unwrap();
        assert_eq!(serde_json::from_str::<Location>(&json).unwrap(), s3);
        assert_eq!(s3.file_name(), "a");
    }
}
