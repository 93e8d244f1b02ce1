//! `plm-train quantize` end to end on the committed tiny checkpoint: the int8 and bf16
//! directories it writes load as models of their own with their gate reports, an existing
//! destination is refused, and quantising an int8 model again is refused.

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
    quantize_to(model, to, data, "int8")
}

fn quantize_to(model: &Path, to: &Path, data: &Path, precision: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["quantize", "--precision", precision, "--model"])
        .arg(model)
        .arg("--to")
        .arg(to)
        .arg("--data")
        .arg(data)
        .args(["--sequences", "60"])
        .output()
        .unwrap()
}

/// The report of a run that succeeded with every gate passed.
fn passed(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gates"]["passed"], true, "{report}");
    report
}

#[test]
fn quantize_writes_a_gated_int8_model_and_refuses_what_it_must() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic_fasta(tmp.path());
    let to = tmp.path().join("tiny-int8");
    let out = quantize(&tiny_model(), &to, &data);
    let report = passed(&out);
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

#[test]
fn cpu_only_commands_refuse_a_device() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--device",
            "cuda",
            "quantize",
            "--precision",
            "int8",
            "--model",
        ])
        .arg(tiny_model())
        .arg("--to")
        .arg(tmp.path().join("int8"))
        .arg("--data")
        .arg(tmp.path().join("none.fasta"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`quantize` runs on the CPU only"), "{err}");
    assert!(!tmp.path().join("int8").exists());
}

#[test]
fn bf16_is_a_model_of_its_own_and_closer_to_f32_than_int8() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic_fasta(tmp.path());
    let mut cosines = Vec::new();
    for precision in ["int8", "bf16"] {
        let to = tmp.path().join(format!("tiny-{precision}"));
        let out = quantize_to(&tiny_model(), &to, &data, precision);
        let report = passed(&out);
        assert_eq!(report["precision"], precision);
        cosines.push(report["gates"]["embedding_cosine"]["min"].as_f64().unwrap());
    }
    let (int8, bf16) = (
        Checkpoint::open(tmp.path().join("tiny-int8")).unwrap(),
        Checkpoint::open(tmp.path().join("tiny-bf16")).unwrap(),
    );
    assert_eq!(bf16.precision(), Precision::Bf16);
    assert_eq!(bf16.weights_sha256, int8.weights_sha256);
    assert_ne!(bf16.fingerprint, int8.fingerprint);
    assert_ne!(bf16.fingerprint, bf16.weights_sha256);
    assert!(
        cosines[1] > cosines[0] && cosines[1] < 1.0,
        "least cosine to f32: int8 {}, bf16 {}",
        cosines[0],
        cosines[1]
    );
}
