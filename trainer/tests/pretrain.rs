//! Pretraining end to end on tiny configs: the loss falls on real sequences, a resumed run is
//! bit-identical to an uninterrupted one, and the checkpoint loads in the model library.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use plm_model::{EmbeddingCache, Engine, EngineOptions, LoadOptions, Pooling, ProteinTokenizer};
use plm_train::comm::SingleProcess;
use plm_train::model_init::TrainableModel;
use plm_train::pretrain::{self, PretrainArgs};
use plm_train::train_loop::Precision;

mod common;
use common::{synthetic_fasta, tiny_loop};

fn args(train: &Path, valid: Option<&Path>, out: &Path, steps: usize) -> PretrainArgs {
    PretrainArgs {
        common: tiny_loop(train, valid, out, steps),
        hidden: 32,
        layers: 2,
        heads: 4,
        intermediate: Some(64),
    }
}

/// One pretraining run (or resumption) in this process, on the CPU.
fn run_on_cpu(args: PretrainArgs, resume: bool) {
    pretrain::run(args, resume, &Device::Cpu, &SingleProcess).unwrap();
}

#[test]
fn resume_without_steps_keeps_the_stored_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let run = tmp.path().join("run");
    run_on_cpu(args(&train, None, &run, 3), false);
    let before = std::fs::read(run.join("last/model.safetensors")).unwrap();
    // `--resume` with the default `--steps` (not typed): the run is already complete.
    let mut defaulted = args(&train, None, &run, 10_000);
    defaulted.common.steps_given = false;
    run_on_cpu(defaulted, true);
    let after = std::fs::read(run.join("last/model.safetensors")).unwrap();
    assert!(before == after, "a resume without --steps trained further");
    // A typed larger budget extends it.
    run_on_cpu(args(&train, None, &run, 5), true);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("last/trainer.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 5);
}

#[test]
fn resumed_run_is_bit_identical_to_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let full = tmp.path().join("full");
    run_on_cpu(args(&train, None, &full, 6), false);
    let split = tmp.path().join("split");
    run_on_cpu(args(&train, None, &split, 3), false);
    run_on_cpu(args(&train, None, &split, 6), true);
    let a = std::fs::read(full.join("last/model.safetensors")).unwrap();
    let b = std::fs::read(split.join("last/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let a = std::fs::read(full.join("last/optimizer.safetensors")).unwrap();
    let b = std::fs::read(split.join("last/optimizer.safetensors")).unwrap();
    assert!(a == b, "resumed optimizer state differs");
    assert!(
        full.join("loss.png").is_file(),
        "no loss plot beside the checkpoint"
    );

    // The checkpoint is a model directory the library (and so the extension) loads.
    let engine = Engine::load(
        full.join("last"),
        LoadOptions::default(),
        EngineOptions::default(),
        Arc::new(EmbeddingCache::new(0)),
    )
    .unwrap();
    assert_eq!(engine.name(), "tiny-test");
    let e = engine.embed(&["MKTAYIAKQR"], None, Pooling::Mean).unwrap();
    assert_eq!(e[0].len(), 32);
    let manifest = engine.checkpoint().manifest.clone().unwrap();
    assert_eq!(manifest.training["steps"], 6);
    assert_eq!(manifest.fingerprint, engine.fingerprint());
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn bf16_mixed_precision_follows_f32_and_saves_f32_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let f32_run = tmp.path().join("f32");
    run_on_cpu(args(&train, None, &f32_run, 6), false);
    let bf16_run = tmp.path().join("bf16");
    let mut a = args(&train, None, &bf16_run, 6);
    a.common.dtype = Precision::Bf16;
    run_on_cpu(a, false);
    let (x, y) = (losses(&f32_run), losses(&bf16_run));
    assert_eq!(x.len(), 6);
    for (step, (a, b)) in x.iter().zip(&y).enumerate() {
        assert!(
            (a - b).abs() < 0.05 * a,
            "step {}: f32 {a} vs bf16 {b}",
            step + 1
        );
    }
    assert!(x != y, "bf16 gave exactly the f32 losses: was it used?");
    let weights =
        candle_core::safetensors::load(bf16_run.join("last/model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(weights.values().all(|t| t.dtype() == DType::F32));
    // Gradients reached the f32 master weights through the casts.
    let config = plm_model::EsmConfig::esm2(32, 2, 4, 64);
    let init = TrainableModel::new(&config, 7, &Device::Cpu)
        .unwrap()
        .tensors();
    let moved = |name: &str| {
        let d = (&weights[name] - &init[name]).unwrap().abs().unwrap();
        d.max_all().unwrap().to_scalar::<f32>().unwrap()
    };
    for name in [
        "esm.encoder.layer.0.attention.self.query.weight",
        "esm.embeddings.word_embeddings.weight",
        "lm_head.dense.weight",
    ] {
        assert!(moved(name) > 1e-3, "{name} did not train in bf16");
    }
}

#[test]
fn loss_falls_on_real_sequences() {
    let data = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../shared/data/pretrain");
    let train = data.join("swissprot2014_train.fasta.gz");
    let valid = data.join("swissprot2014_valid.fasta.gz");
    if !train.is_file() || !valid.is_file() {
        eprintln!(
            "SKIPPED: {} is absent (shared protein data)",
            data.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut a = args(&train, Some(&valid), &out, 60);
    a.common.save_every = 60;
    a.common.eval_every = 60;
    let c = &a.common;
    let seqs =
        pretrain::load_validation(&valid.clone().into(), c.valid_sequences, c.max_len, c.seed)
            .unwrap();
    let tok = ProteinTokenizer::esm();
    let config = plm_model::EsmConfig::esm2(32, 2, 4, 64);
    let fresh = TrainableModel::new(&config, c.seed, &Device::Cpu).unwrap();
    let before =
        pretrain::perplexity(&fresh.model, &tok, &seqs, 2048, c.seed, &Device::Cpu).unwrap();
    run_on_cpu(a, false);
    let trained = TrainableModel::from_checkpoint(&out.join("last"), &Device::Cpu).unwrap();
    let after = pretrain::perplexity(&trained.model, &tok, &seqs, 2048, 7, &Device::Cpu).unwrap();
    eprintln!("validation perplexity: {before:.2} -> {after:.2}");
    assert!(
        before > 25.0,
        "an untrained model should be near uniform over 33 tokens: {before}"
    );
    assert!(
        after < before * 0.8,
        "perplexity did not fall enough: {before} -> {after}"
    );
}
