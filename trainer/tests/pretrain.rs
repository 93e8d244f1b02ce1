//! Pretraining end to end on tiny configs: the loss falls on real sequences, a resumed run is
//! bit-identical to an uninterrupted one, and the checkpoint loads in the model library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use plm_model::{DeviceSpec, EmbeddingCache, Engine, EngineOptions, Pooling, ProteinTokenizer};
use plm_train::model_init::TrainableModel;
use plm_train::pretrain::{self, PretrainArgs};

fn args(train: &Path, valid: Option<&Path>, out: &Path, steps: usize) -> PretrainArgs {
    PretrainArgs {
        train: train.to_path_buf(),
        valid: valid.map(Path::to_path_buf),
        out: out.to_path_buf(),
        name: "tiny-test".into(),
        hidden: 32,
        layers: 2,
        heads: 4,
        intermediate: Some(64),
        steps,
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
    }
}

fn synthetic_fasta(dir: &Path) -> PathBuf {
    let path = dir.join("train.fasta");
    let motifs = ["MKTAYIAKQR", "GSHMSLFDFF", "LVEEGQSLMM", "PDQQRLIFAG"];
    let mut text = String::new();
    for i in 0..120 {
        let seq: String = (0..(3 + i % 5)).map(|k| motifs[(i + k) % 4]).collect();
        text.push_str(&format!(">s{i}\n{seq}\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn resumed_run_is_bit_identical_to_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let full = tmp.path().join("full");
    pretrain::run(args(&train, None, &full, 6), false, &Device::Cpu).unwrap();
    let split = tmp.path().join("split");
    pretrain::run(args(&train, None, &split, 3), false, &Device::Cpu).unwrap();
    pretrain::run(args(&train, None, &split, 6), true, &Device::Cpu).unwrap();
    let a = std::fs::read(full.join("last/model.safetensors")).unwrap();
    let b = std::fs::read(split.join("last/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let a = std::fs::read(full.join("last/optimizer.safetensors")).unwrap();
    let b = std::fs::read(split.join("last/optimizer.safetensors")).unwrap();
    assert!(a == b, "resumed optimizer state differs");

    // The checkpoint is a model directory the library (and so the extension) loads.
    let engine = Engine::load(
        full.join("last"),
        DeviceSpec::Cpu,
        DType::F32,
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

#[test]
fn loss_falls_on_real_sequences() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/pretrain");
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
    a.save_every = 60;
    a.eval_every = 60;
    let seqs = pretrain::load_validation(&valid, a.valid_sequences, a.max_len, a.seed).unwrap();
    let tok = ProteinTokenizer::esm();
    let config = plm_model::EsmConfig::esm2(32, 2, 4, 64);
    let fresh = TrainableModel::new(&config, a.seed, &Device::Cpu).unwrap();
    let before =
        pretrain::perplexity(&fresh.model, &tok, &seqs, 2048, a.seed, &Device::Cpu).unwrap();
    pretrain::run(a, false, &Device::Cpu).unwrap();
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
