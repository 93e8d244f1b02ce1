//! `plm-train quantize` end to end on the committed tiny checkpoint: the int8 directory it
//! writes loads as a model of its own with its gate report, an existing destination is refused,
//! and quantising an int8 model again is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use plm_model::{Checkpoint, Precision};

mod common;
use common::synthetic_fasta;

const BIN: &str = env!("CARGO_BIN_EXE_plm-train");

fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/esm_tiny")
}

fn quantize(model: &Path, to: &Path, data: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["quantize", "--model"])
        .arg(model)
        .arg("--to")
        .arg(to)
        .arg("--data")
        .arg(data)
        .args(["--sequences", "60"])
        .output()
        .unwrap()
}

#[test]
fn quantize_writes_a_gated_int8_model_and_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic_fasta(tmp.path());
    let to = tmp.path().join("tiny-int8");
    let out = quantize(&tiny_model(), &to, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gates"]["passed"], true, "{report}");
    assert_eq!(report["sequences"], 60);
    let cosine = report["gates"]["embedding_cosine"]["mean"]
        .as_f64()
        .unwrap();
    assert!(cosine > 0.999 && cosine < 1.0, "{cosine}");

    let full = Checkpoint::open(tiny_model()).unwrap();
    let int8 = Checkpoint::open(&to).unwrap();
    assert_eq!(int8.precision(), Precision::Int8);
    assert_eq!(int8.name(), format!("{}-int8", full.name()));
    assert_eq!(int8.weights_sha256, full.weights_sha256);
    assert_ne!(int8.fingerprint, full.fingerprint);
    assert_eq!(report["fingerprint"], int8.fingerprint.as_str());
    let manifest = int8.manifest.unwrap();
    assert_eq!(manifest.training["quantization"]["gates"], report["gates"]);
    assert!(!tmp.path().join(".tiny-int8.partial").exists());

    let again = quantize(&tiny_model(), &to, &data);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let twice = quantize(&to, &tmp.path().join("twice"), &data);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already int8"));
    assert!(!tmp.path().join("twice").exists());
}
