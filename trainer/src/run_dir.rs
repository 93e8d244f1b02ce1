//! Where a training run's files live.
//!
//! A local run directory is used as it is: the checkpoint is `RUN/last` (replaced atomically by
//! a rename), beside `metrics.jsonl` and `loss.png`. A run in object storage (`--out
//! s3://bucket/run`) is written on this machine into a staging directory and published after
//! each checkpoint: the checkpoint's files go to a new prefix `RUN/checkpoints/step-NNNNNNNN/`,
//! then the pointer object `RUN/last.json` is replaced (a single PUT, atomic) to name it, then
//! the previous checkpoint's prefix is deleted. A reader (a resuming rank, `--teacher
//! s3://bucket/run/last`) follows the pointer, so it never sees a half-written checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::storage::{self, Location, ObjectUrl, LAST_POINTER};

/// The checkpoint directory inside a run.
pub const LAST: &str = "last";
/// Metrics log inside the run directory.
pub const METRICS: &str = "metrics.jsonl";
/// Loss plot inside the run directory.
pub const LOSS_PLOT: &str = "loss.png";
/// Object written and deleted to check that a remote run is writable.
const WRITE_PROBE: &str = ".plm-train-write-check";
/// Prefix of the published checkpoints of a run in object storage.
pub const CHECKPOINTS: &str = "checkpoints";

/// A run's directory: local, or staged locally and published to object storage.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// Where this process reads and writes the run's files.
    pub local: PathBuf,
    remote: Option<ObjectUrl>,
}

impl RunDir {
    /// The run at `out` as seen by rank `rank` (each rank stages its own copy of a remote run).
    /// Rank 0 checks now that it can write a remote run (a missing bucket or read-only
    /// credentials fail here, not at the first checkpoint).
    pub fn open(out: &Location, rank: usize) -> Result<Self> {
        let (local, remote) = match out {
            Location::Local(p) => (p.clone(), None),
            Location::Object(o) => (storage::staging_dir(o, "runs", rank), Some(o.clone())),
        };
        if let (Some(remote), 0) = (&remote, rank) {
            let probe = remote.join(WRITE_PROBE);
            storage::put(&probe, b"plm-train write check".to_vec())
                .with_context(|| format!("cannot write the run {remote}"))?;
            storage::delete(&probe)?;
        }
        std::fs::create_dir_all(&local).with_context(|| format!("creating {}", local.display()))?;
        Ok(Self { local, remote })
    }

    /// The local checkpoint directory.
    pub fn last(&self) -> PathBuf {
        self.local.join(LAST)
    }

    /// Makes the run's latest checkpoint available in [`RunDir::last`]; `false` when the run
    /// has none yet. For a remote run the checkpoint is downloaded (and, on the root rank, the
    /// metrics log, so that it goes on growing).
    pub fn fetch_last(&self, state_file: &str, root: bool) -> Result<bool> {
        let Some(remote) = &self.remote else {
            return Ok(self.last().join(state_file).is_file());
        };
        let Some((checkpoint, step)) = storage::read_pointer(remote)? else {
            return Ok(false);
        };
        let last = self.last();
        if last.exists() {
            std::fs::remove_dir_all(&last)
                .with_context(|| format!("clearing {}", last.display()))?;
        }
        let files = storage::download_prefix(&checkpoint, &last)
            .with_context(|| format!("downloading the checkpoint of step {step} of {remote}"))?;
        if root {
            eprintln!("fetched {checkpoint} (step {step}, {files} files)");
            let metrics = self.local.join(METRICS);
            match storage::get_optional(&remote.join(METRICS))? {
                Some(bytes) => std::fs::write(&metrics, &bytes)
                    .with_context(|| format!("writing {}", metrics.display()))?,
                None => {
                    std::fs::remove_file(&metrics).ok();
                }
            }
        }
        Ok(last.join(state_file).is_file())
    }

    /// Publishes the checkpoint just written to [`RunDir::last`] (remote runs; a no-op for
    /// local ones), with the metrics log and the loss plot.
    pub fn publish(&self, step: usize) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let name = format!("{CHECKPOINTS}/step-{step:08}");
        let target = remote.join(&name);
        let last = self.last();
        for file in files_in(&last)? {
            storage::upload_file(&last.join(&file), &target.join(&file))
                .with_context(|| format!("publishing the checkpoint of step {step}"))?;
        }
        // The log first: a reader that follows the pointer finds a log at least as long.
        self.publish_logs()?;
        let pointer = serde_json::json!({ "checkpoint": name, "step": step });
        storage::put(&remote.join(LAST_POINTER), pointer.to_string().into_bytes())?;
        // Superseded checkpoints, and any a killed run left half-written, go.
        let checkpoints = remote.join(CHECKPOINTS);
        let mut stale: Vec<String> = storage::list(&checkpoints)?
            .iter()
            .filter_map(|key| key.split('/').next().map(str::to_string))
            .filter(|dir| format!("{CHECKPOINTS}/{dir}") != name)
            .collect();
        stale.dedup();
        for dir in stale {
            let old = checkpoints.join(&dir);
            storage::delete_prefix(&old)
                .with_context(|| format!("removing the superseded checkpoint {old}"))?;
        }
        Ok(())
    }

    /// Drops the metrics of steps after `step` (a run killed after its last checkpoint logged
    /// steps that the resumed run will do again).
    pub fn trim_metrics(&self, step: usize) -> Result<()> {
        let path = self.local.join(METRICS);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|r| r["step"].as_u64())
                    .is_some_and(|s| s <= step as u64)
            })
            .collect();
        if kept.len() != text.lines().count() {
            let mut out = kept.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Uploads the metrics log and the loss plot (remote runs).
    pub fn publish_logs(&self) -> Result<()> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        for name in [METRICS, LOSS_PLOT] {
            let file = self.local.join(name);
            if file.is_file() {
                storage::upload_file(&file, &remote.join(name))?;
            }
        }
        Ok(())
    }
}

/// Names of the plain files in a directory, sorted.
fn files_in(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}
