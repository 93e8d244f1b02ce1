//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use plm_train::train_loop::{LoopArgs, Precision};

/// `mpirun` on PATH, or `None` after saying that the test is skipped.
pub fn mpirun_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mpirun"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED: mpirun is not on PATH (install openmpi-bin: scripts/install-deps.sh)");
    }
    found
}

/// Held while a test writes an executable and while a test forks a child: a child forked while
/// another thread still has a fresh copy open for writing inherits that descriptor until it
/// execs, and running the copy in that window fails with "Text file busy" (ETXTBSY).
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// A private copy of the binary `bin` in `dir`: a concurrent build sharing the target directory
/// (without the test's features) cannot swap it during the test. Run it with [`output`].
pub fn private_copy(bin: &str, dir: &Path) -> PathBuf {
    let copy = dir.join(Path::new(bin).file_name().unwrap_or_default());
    let _guard = FORK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    std::fs::copy(bin, &copy).unwrap();
    copy
}

/// `cmd.spawn()`, forking under the lock [`private_copy`] writes under.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _guard = FORK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    cmd.spawn()
}

/// `cmd.output()`, forking under the lock [`private_copy`] writes under.
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))?.wait_with_output()
}

/// Largest absolute element-wise difference of two tensors.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Writes a synthetic FASTA of 120 motif-built sequences (learnable in a few steps).
pub fn synthetic_fasta(dir: &Path) -> PathBuf {
    let path = dir.join("train.fasta");
    let mut text = String::new();
    for (i, seq) in motif_sequences(120, 0).iter().enumerate() {
        text.push_str(&format!(">s{i}\n{seq}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// `n` sequences concatenating 3–7 of four motifs, starting at motif offset `shift`.
pub fn motif_sequences(n: usize, shift: usize) -> Vec<String> {
    let motifs = ["MKTAYIAKQR", "GSHMSLFDFF", "LVEEGQSLMM", "PDQQRLIFAG"];
    (0..n)
        .map(|i| {
            (0..(3 + i % 5))
                .map(|k| motifs[(i + k + shift) % 4])
                .collect()
        })
        .collect()
}

/// Loop options of a tiny, fast run.
pub fn tiny_loop(train: &Path, valid: Option<&Path>, out: &Path, steps: usize) -> LoopArgs {
    LoopArgs {
        train: train.into(),
        valid: valid.map(Into::into),
        out: out.into(),
        name: "tiny-test".into(),
        steps,
        steps_given: true,
        lr: 3e-3,
        warmup: 5,
        max_tokens: 2048,
        accumulate: 2,
        max_len: 64,
        clip: 1.0,
        mask_rate: 0.15,
        seed: 7,
        eval_every: 1000,
        save_every: 3,
        valid_sequences: 64,
        buffer: 64,
        dtype: Precision::F32,
        shard_optimizer: false,
    }
}
