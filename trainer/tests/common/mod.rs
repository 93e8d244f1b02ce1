//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use plm_train::train_loop::{LoopArgs, Precision};

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
