//! Residues per second of the engine on random-weight ESM-2 8M and 35M configs.
//!
//! `cargo bench -p plm-model --bench embed` — batch sizes 1, 8, 32 at lengths 100, 300, 1000.
//! The same workload runs through PyTorch with `scripts/bench_reference.py` for the ratio.

use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use plm_model::checkpoint::{save_checkpoint, Manifest};
use plm_model::{
    EmbeddingCache, Engine, EngineOptions, EsmConfig, EsmForMaskedLM, LoadOptions, Pooling,
};

fn random_checkpoint(config: &EsmConfig, dir: &std::path::Path) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    EsmForMaskedLM::load(vb, config).expect("build model");
    let tensors = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    save_checkpoint(
        dir,
        config,
        &tensors,
        Manifest {
            name: "bench".into(),
            ..Default::default()
        },
    )
    .expect("save");
}

/// Same as `model/examples/throughput.rs` and `scripts/bench_reference.py`: distinct for every
/// seed below 400 (the engine computes a repeated sequence once, which would flatter it).
fn sequence(len: usize, seed: usize) -> String {
    const AA: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";
    (0..len)
        .map(|i| AA[(i * 7 + seed * 13 + i / 3 + (seed / 20) * (i % 5)) % 20] as char)
        .collect()
}

fn bench(c: &mut Criterion) {
    for (label, config) in [
        ("8M", EsmConfig::esm2_t6_8m()),
        ("35M", EsmConfig::esm2_t12_35m()),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(label);
        random_checkpoint(&config, &path);
        let engine = Engine::load(
            &path,
            LoadOptions::default(),
            EngineOptions {
                max_tokens_per_batch: 32 * 1002,
                ..Default::default()
            },
            Arc::new(EmbeddingCache::new(0)),
        )
        .expect("load");
        let mut group = c.benchmark_group(format!("embed_{label}"));
        group.sample_size(10);
        for &len in &[100usize, 300, 1000] {
            for &batch in &[1usize, 8, 32] {
                if len * batch > 32 * 300 && label == "35M" {
                    continue;
                }
                let seqs: Vec<String> = (0..batch).map(|s| sequence(len, s)).collect();
                let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
                group.throughput(Throughput::Elements((len * batch) as u64));
                group.bench_with_input(
                    BenchmarkId::new(format!("len{len}"), batch),
                    &refs,
                    |b, refs| b.iter(|| engine.embed(refs, None, Pooling::Mean).expect("embed")),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
