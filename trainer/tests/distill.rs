//! Distillation end to end on tiny configs: the student's KL to the teacher falls on held-out
//! sequences, the student checkpoint is a plain ESM-2 directory, and a resumed run is
//! bit-identical to an uninterrupted one.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use plm_model::Checkpoint;
use plm_train::comm::SingleProcess;
use plm_train::distill::{self, DistillArgs, DistillObjective};
use plm_train::pretrain::{self, PretrainArgs};
use plm_train::train_loop::Objective;

mod common;
use common::{motif_sequences, synthetic_fasta, tiny_loop};

/// Pretrains a 4-block, 32-wide teacher for `steps` steps.
fn teacher(dir: &Path, train: &Path, steps: usize) -> PathBuf {
    let out = dir.join("teacher");
    let mut common = tiny_loop(train, None, &out, steps);
    common.save_every = steps;
    let args = PretrainArgs {
        common,
        hidden: 32,
        layers: 4,
        heads: 4,
        intermediate: Some(64),
    };
    pretrain::run(args, false, &Device::Cpu, &SingleProcess).unwrap();
    out.join("last")
}

fn distill_args(train: &Path, teacher: &Path, out: &Path, steps: usize) -> DistillArgs {
    let mut common = tiny_loop(train, None, out, steps);
    common.name = "tiny-student".into();
    DistillArgs {
        common,
        teacher: teacher.into(),
        student_config: None,
        layers: Some(2),
        hidden: None,
        heads: None,
        intermediate: None,
        temperature: 2.0,
        alpha: 1.0,
        beta: 1.0,
        mlm_weight: 0.5,
    }
}

#[test]
fn distillation_lowers_kl_and_writes_a_plain_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let teacher_dir = teacher(tmp.path(), &train, 40);
    let teacher = Checkpoint::open(&teacher_dir)
        .unwrap()
        .load_model(&Device::Cpu, DType::F32)
        .unwrap();
    // Held out: motif orders the training file does not start from.
    let held_out = motif_sequences(24, 1)
        .into_iter()
        .map(|s| format!("{s}MKTA"))
        .collect::<Vec<_>>();

    let kl = |student: &plm_model::EsmForMaskedLM| {
        distill::kl_divergence(&teacher, student, &held_out, 1.0, 2048, &Device::Cpu).unwrap()
    };

    // A narrower student starts from random weights and learns the teacher's distribution.
    let out = tmp.path().join("narrow");
    let mut args = distill_args(&train, &teacher_dir, &out, 30);
    args.hidden = Some(16);
    args.heads = Some(2);
    let random_init = kl(&DistillObjective::new(&args, &teacher_dir, &Device::Cpu)
        .unwrap()
        .model()
        .model);
    distill::run(args, false, &Device::Cpu, &SingleProcess).unwrap();
    let ckpt = Checkpoint::open(out.join("last")).unwrap();
    let student = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
    assert_eq!(ckpt.config.num_hidden_layers, 2);
    assert_eq!(ckpt.config.hidden_size, 16);
    let after = kl(&student);
    eprintln!("narrow student: KL to the teacher {random_init:.4} -> {after:.4}");
    assert!(
        after < 0.5 * random_init,
        "KL did not fall enough: {random_init} -> {after}"
    );
    // The projection is training state, not part of the model.
    let weights = candle_core::safetensors::load(ckpt.weights_path(), &Device::Cpu).unwrap();
    assert!(weights.keys().all(|k| !k.starts_with("distill")));
    assert!(out.join("last/aux.safetensors").is_file());
    assert!(out.join("loss.png").is_file());
    assert_eq!(ckpt.manifest.unwrap().training["teacher"], "tiny-test");

    // At the teacher's width the student starts from every other teacher block, far closer
    // to the teacher than a random start, and distillation keeps it there.
    let out = tmp.path().join("same-width");
    let args = distill_args(&train, &teacher_dir, &out, 10);
    let copied = kl(&DistillObjective::new(&args, &teacher_dir, &Device::Cpu)
        .unwrap()
        .model()
        .model);
    distill::run(args, false, &Device::Cpu, &SingleProcess).unwrap();
    let student = Checkpoint::open(out.join("last"))
        .unwrap()
        .load_model(&Device::Cpu, DType::F32)
        .unwrap();
    let after = kl(&student);
    eprintln!("same-width student: KL to the teacher {copied:.4} -> {after:.4}");
    assert!(copied < 0.25 * random_init, "{copied} vs {random_init}");
    assert!(after < 0.25 * random_init, "{after} vs {random_init}");
}

#[test]
fn resumed_distillation_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let train = synthetic_fasta(tmp.path());
    let teacher_dir = teacher(tmp.path(), &train, 2);
    let full = tmp.path().join("full");
    let mut a = distill_args(&train, &teacher_dir, &full, 6);
    a.hidden = Some(16);
    a.heads = Some(2);
    distill::run(a.clone(), false, &Device::Cpu, &SingleProcess).unwrap();
    let split = tmp.path().join("split");
    let mut b = a.clone();
    b.common.out = split.clone().into();
    b.common.steps = 3;
    distill::run(b.clone(), false, &Device::Cpu, &SingleProcess).unwrap();
    b.common.steps = 6;
    distill::run(b, true, &Device::Cpu, &SingleProcess).unwrap();
    for file in [
        "model.safetensors",
        "aux.safetensors",
        "optimizer.safetensors",
    ] {
        let x = std::fs::read(full.join("last").join(file)).unwrap();
        let y = std::fs::read(split.join("last").join(file)).unwrap();
        assert!(x == y, "resumed {file} differs from the uninterrupted run");
    }
}
