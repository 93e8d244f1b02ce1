//! Pretraining end to end on tiny configs: the loss falls on real sequences, a resumed run is
//! bit-identical to an uninterrupted one, and the checkpoint loads in the model library.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use plm_model::{DeviceSpec, EmbeddingCache, Engine, EngineOptions, Pooling, ProteinTokenizer};
use plm_train::comm::SingleProcess;
use plm_train::model_init::TrainableModel;
use plm_train::pretrain::{self, PretrainArgs};

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

#[test]
fn resumed_run_is_bit_identical_to_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let full = tmp.path().join("full");
    pretrain::run(
        args(&train, None, &full, 6),
        false,
        &Device::Cpu,
        &SingleProcess,
    )
    .unwrap();
    let split = tmp.path().join("split");
    pretrain::run(
        args(&train, None, &split, 3),
        false,
        &Device::Cpu,
        &SingleProcess,
    )
    .unwrap();
    pretrain::run(
        args(&train, None, &split, 6),
        true,
        &Device::Cpu,
        &SingleProcess,
    )
    .unwrap();
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
    a.common.save_every = 60;
    a.common.eval_every = 60;
    let c = &a.common;
    let seqs = pretrain::load_validation(&valid, c.valid_sequences, c.max_len, c.seed).unwrap();
    let tok = ProteinTokenizer::esm();
    let config = plm_model::EsmConfig::esm2(32, 2, 4, 64);
    let fresh = TrainableModel::new(&config, c.seed, &Device::Cpu).unwrap();
    let before =
        pretrain::perplexity(&fresh.model, &tok, &seqs, 2048, c.seed, &Device::Cpu).unwrap();
    pretrain::run(a, false, &Device::Cpu, &SingleProcess).unwrap();
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
