//! Data parallelism over MPI: `mpirun -np 2` with `--accumulate 1`, interrupted and resumed,
//! ends with the same weights as one process with `--accumulate 2` (the same global batch).
//! Needs the `mpi` feature and `mpirun` on PATH; skips with a message otherwise.
#![cfg(feature = "mpi")]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};

mod common;
use common::{max_abs_diff, mpirun_or_skip, private_copy, synthetic_fasta};

const BIN: &str = env!("CARGO_BIN_EXE_plm-train");

/// `plm-train pretrain` (the binary `bin`) on a tiny config, under `mpirun -np ranks` when
/// `ranks > 1`.
#[allow(clippy::too_many_arguments)]
fn pretrain(
    bin: &Path,
    mpirun: &Path,
    ranks: usize,
    train: &Path,
    out: &Path,
    steps: usize,
    accumulate: usize,
    resume: bool,
    flags: &[&str],
) {
    let mut cmd = if ranks > 1 {
        let mut c = Command::new(mpirun);
        c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(ranks.to_string())
            .arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("pretrain")
        .arg("--train")
        .arg(train)
        .arg("--out")
        .arg(out)
        .args(["--hidden", "32", "--layers", "2", "--heads", "4"])
        .args(["--intermediate", "64", "--lr", "3e-3", "--warmup", "2"])
        .args(["--max-tokens", "1024", "--max-len", "64", "--buffer", "64"])
        .args(["--save-every", "2", "--eval-every", "1000", "--seed", "11"])
        .arg("--steps")
        .arg(steps.to_string())
        .arg("--accumulate")
        .arg(accumulate.to_string())
        .env("RAYON_NUM_THREADS", "1");
    if resume {
        cmd.arg("--resume");
    }
    cmd.args(flags);
    let output = common::output(&mut cmd).expect("running plm-train");
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(run.join("last/model.safetensors"), &Device::Cpu).unwrap()
}

fn losses(run: &Path) -> Vec<(u64, f64, u64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        by_step.insert(
            r["step"].as_u64().unwrap(),
            (
                r["loss"].as_f64().unwrap(),
                r["tokens_seen"].as_u64().unwrap(),
            ),
        );
    }
    by_step.into_iter().map(|(s, (l, t))| (s, l, t)).collect()
}

#[test]
fn two_ranks_match_one_process_with_the_doubled_batch() {
    let Some(mpirun) = mpirun_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let bin = private_copy(BIN, tmp.path());
    let single = tmp.path().join("single");
    pretrain(&bin, &mpirun, 1, &train, &single, 4, 2, false, &[]);
    // Two ranks, stopped after 2 steps and resumed (still on two ranks) to 4.
    let parallel = tmp.path().join("parallel");
    pretrain(&bin, &mpirun, 2, &train, &parallel, 2, 1, false, &[]);
    pretrain(&bin, &mpirun, 2, &train, &parallel, 4, 1, true, &[]);

    let a = weights(&single);
    assert_close(&a, &weights(&parallel));
    // Training really moved the weights (the comparison is not vacuous).
    let init = tmp.path().join("init");
    pretrain(&bin, &mpirun, 1, &train, &init, 1, 2, false, &[]);
    let moved = weights(&init)
        .iter()
        .any(|(n, t)| max_abs_diff(t, &a[n]) > 1e-4);
    assert!(moved, "three more steps did not change the weights");

    let (la, lb) = (losses(&single), losses(&parallel));
    assert_eq!(la.len(), 4);
    assert_eq!(la.len(), lb.len());
    for ((s, x, tx), (_, y, ty)) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {s}: loss {x} vs {y}");
        assert_eq!(tx, ty, "step {s}: tokens seen");
    }
    // Only rank 0 wrote: one metrics line per step, and the plot.
    let lines = std::fs::read_to_string(parallel.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(parallel.join("loss.png").is_file());

    // Accumulation on each rank too: 2 ranks × 2 micro-batches = 1 process × 4 (the sums are
    // grouped differently, so equal within rounding rather than bit for bit).
    let single = tmp.path().join("single4");
    pretrain(&bin, &mpirun, 1, &train, &single, 3, 4, false, &[]);
    let parallel = tmp.path().join("parallel2x2");
    pretrain(&bin, &mpirun, 2, &train, &parallel, 3, 2, false, &[]);
    assert_close(&weights(&single), &weights(&parallel));
}

#[test]
fn sharded_optimizer_matches_and_resumes_on_another_number_of_ranks() {
    let Some(mpirun) = mpirun_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let bin = private_copy(BIN, tmp.path());
    let shard = ["--shard-optimizer"];
    let run = |name: &str| tmp.path().join(name);
    // One process with the doubled batch, and two ranks without sharding.
    pretrain(&bin, &mpirun, 1, &train, &run("single"), 4, 2, false, &[]);
    pretrain(&bin, &mpirun, 2, &train, &run("plain"), 4, 1, false, &[]);
    // Two ranks with sharded optimizer state, stopped at step 2 and continued on two ranks...
    pretrain(
        &bin,
        &mpirun,
        2,
        &train,
        &run("sharded"),
        2,
        1,
        false,
        &shard,
    );
    let halfway = manifest(&run("sharded"));
    pretrain(
        &bin,
        &mpirun,
        2,
        &train,
        &run("sharded"),
        4,
        1,
        true,
        &shard,
    );
    // ...and the same first half continued on one rank (the global batch is kept).
    pretrain(
        &bin,
        &mpirun,
        2,
        &train,
        &run("shrunk"),
        2,
        1,
        false,
        &shard,
    );
    pretrain(&bin, &mpirun, 1, &train, &run("shrunk"), 4, 1, true, &[]);

    let reference = weights(&run("single"));
    assert_close(&reference, &weights(&run("plain")));
    assert_close(&weights(&run("plain")), &weights(&run("sharded")));
    assert_close(&weights(&run("sharded")), &weights(&run("shrunk")));
    let (a, b) = (losses(&run("sharded")), losses(&run("shrunk")));
    assert_eq!(a.len(), 4);
    for ((s, x, _), (_, y, _)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "step {s}: loss {x} vs {y}");
    }

    // Each rank held half of the optimizer state (measured by the trainer, in the manifest).
    let per_rank = |m: &serde_json::Value| -> Vec<f64> {
        m["training"]["memory"]["optimizer_state_mib"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let plain = per_rank(&manifest(&run("plain")));
    let sharded = per_rank(&halfway);
    assert_eq!(plain.len(), 2);
    assert_eq!(sharded.len(), 2);
    assert!(plain[0] > 0.0 && plain[0] == plain[1], "{plain:?}");
    for s in &sharded {
        assert!(
            (s * 2.0 - plain[0]).abs() <= plain[0] * 1e-3,
            "{sharded:?} vs {plain:?}"
        );
    }
    assert_eq!(halfway["training"]["shard_optimizer"], true);
    eprintln!("optimizer state per rank: {plain:?} MiB unsharded, {sharded:?} MiB sharded");
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("last/manifest.json")).unwrap()).unwrap()
}

/// Every tensor equal within 1e-5 of its largest magnitude, or 1e-6 absolute: attention key
/// biases have an exactly zero gradient (softmax ignores a per-row shift), so what AdamW
/// makes of their rounding noise differs with the summation order.
fn assert_close(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (name, x) in a {
        let y = &b[name];
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
        let scale = x.abs().unwrap().max_all().unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        let rel = diff / scale.to_scalar::<f32>().unwrap().max(1e-6);
        worst = worst.max(rel);
        assert!(
            rel <= 1e-5 || diff <= 1e-6,
            "{name}: difference {diff} (relative {rel})"
        );
    }
    eprintln!("largest relative weight difference: {worst:e}");
}
