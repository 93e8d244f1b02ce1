//! Parity with Hugging Face `transformers`' `EsmForMaskedLM` (reference outputs written by
//! `scripts/make_parity_fixtures.py`): every hidden state, logits, contacts and pooled
//! embeddings, one by one and in padded batches, within 1e-4 (f32).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use plm_model::esm::ForwardOptions;
use plm_model::{Checkpoint, EmbeddingCache, Engine, EngineOptions, LoadOptions, Pooling};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    let d = max_abs_diff(a, b);
    assert!(d <= TOLERANCE, "{what}: max |diff| {d:e} > {TOLERANCE:e}");
}

struct Fixture {
    dir: PathBuf,
    sequences: Vec<String>,
    num_layers: usize,
    reference: HashMap<String, Tensor>,
}

fn load_fixture(dir: &Path) -> Fixture {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    Fixture {
        dir: dir.to_path_buf(),
        sequences: meta["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        num_layers: meta["num_layers"].as_u64().unwrap() as usize,
        reference: candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
            .unwrap(),
    }
}

fn check_fixture(fx: &Fixture, weights_dir: &Path) {
    let ckpt = Checkpoint::open(weights_dir).unwrap();
    let model = ckpt.load_model(&Device::Cpu, DType::F32).unwrap();
    let all_layers: Vec<usize> = (0..=fx.num_layers).collect();
    for (i, seq) in fx.sequences.iter().enumerate() {
        let ids = ckpt.tokenizer.encode(seq).unwrap();
        let n = ids.len();
        let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
        let mask = Tensor::ones((1, n), DType::U32, &Device::Cpu).unwrap();
        let out = model
            .forward(
                &ids,
                &mask,
                &ForwardOptions {
                    layers: all_layers.clone(),
                    logits: true,
                    contacts: true,
                },
            )
            .unwrap();
        for &l in &all_layers {
            let got = out.layer(l).unwrap().squeeze(0).unwrap();
            assert_close(
                &format!("seq{i} hidden{l}"),
                &got,
                &fx.reference[&format!("seq{i}.hidden{l}")],
            );
        }
        let logits = out.logits.as_ref().unwrap().squeeze(0).unwrap();
        assert_close(
            &format!("seq{i} logits"),
            &logits,
            &fx.reference[&format!("seq{i}.logits")],
        );
        let contacts = out.contacts.as_ref().unwrap().squeeze(0).unwrap();
        assert_close(
            &format!("seq{i} contacts"),
            &contacts,
            &fx.reference[&format!("seq{i}.contacts")],
        );
    }

    // The engine: pooled embeddings, contacts and logits through length-bucketed padded batches.
    let engine = Engine::from_checkpoint(
        ckpt,
        LoadOptions::default(),
        EngineOptions {
            max_tokens_per_batch: 100_000,
            ..Default::default()
        },
        Arc::new(EmbeddingCache::new(0)),
    )
    .unwrap();
    let refs: Vec<&str> = fx.sequences.iter().map(String::as_str).collect();
    let pooled = engine.embed(&refs, None, Pooling::Mean).unwrap();
    let logits = engine.logits(&refs).unwrap();
    for (i, p) in pooled.iter().enumerate() {
        let got = Tensor::new(p.as_slice(), &Device::Cpu).unwrap();
        assert_close(
            &format!("seq{i} mean (batched)"),
            &got,
            &fx.reference[&format!("seq{i}.mean")],
        );
        let lg = Tensor::from_vec(
            logits[i].data.clone(),
            (logits[i].rows, logits[i].cols),
            &Device::Cpu,
        )
        .unwrap();
        assert_close(
            &format!("seq{i} logits (batched)"),
            &lg,
            &fx.reference[&format!("seq{i}.logits")],
        );
        let c = engine.contacts(refs[i]).unwrap();
        let c = Tensor::from_vec(c.data, (c.rows, c.cols), &Device::Cpu).unwrap();
        assert_close(
            &format!("seq{i} contacts (engine)"),
            &c,
            &fx.reference[&format!("seq{i}.contacts")],
        );
    }

    // HF's own padded batch against our padded forward, on real (unpadded) positions.
    let model = engine.model();
    let tok = engine.tokenizer();
    let encoded: Vec<Vec<u32>> = refs.iter().map(|s| tok.encode(s).unwrap()).collect();
    let t = encoded.iter().map(Vec::len).max().unwrap();
    let mut ids = vec![tok.special().pad; encoded.len() * t];
    let mut mask = vec![0u32; encoded.len() * t];
    for (r, e) in encoded.iter().enumerate() {
        ids[r * t..r * t + e.len()].copy_from_slice(e);
        mask[r * t..r * t + e.len()].fill(1);
    }
    let b = encoded.len();
    let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
    let out = model
        .forward(
            &ids,
            &mask,
            &ForwardOptions {
                layers: vec![fx.num_layers],
                logits: true,
                contacts: true,
            },
        )
        .unwrap();
    for (r, e) in encoded.iter().enumerate() {
        let n = e.len();
        let got = out.hidden[0].1.get(r).unwrap().narrow(0, 0, n).unwrap();
        let want = fx.reference["batch.last"]
            .get(r)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap();
        assert_close(&format!("batch row {r} last hidden"), &got, &want);
        let got = out
            .logits
            .as_ref()
            .unwrap()
            .get(r)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap();
        let want = fx.reference["batch.logits"]
            .get(r)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap();
        assert_close(&format!("batch row {r} logits"), &got, &want);
        let m = n - 2;
        let got = out.contacts.as_ref().unwrap().get(r).unwrap();
        let got = got.narrow(0, 0, m).unwrap().narrow(1, 0, m).unwrap();
        let want = fx.reference["batch.contacts"].get(r).unwrap();
        let want = want.narrow(0, 0, m).unwrap().narrow(1, 0, m).unwrap();
        assert_close(&format!("batch row {r} contacts"), &got, &want);
    }
    eprintln!(
        "parity ok: {} ({} sequences)",
        fx.dir.display(),
        fx.sequences.len()
    );
}

/// Copies a fixture with LayerNorm tensors renamed from gamma/beta to weight/bias and the
/// `esm.` prefix kept: the layout of the published hub checkpoints.
fn hub_layout_copy(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.replace(".gamma", ".weight").replace(".beta", ".bias"), v))
        .collect();
    assert!(renamed.keys().any(|k| k.ends_with("LayerNorm.weight")));
    candle_core::safetensors::save(&renamed, dst.join("model.safetensors")).unwrap();
}

#[test]
fn tiny_config_matches_transformers() {
    let fx = load_fixture(&fixtures().join("esm_tiny"));
    check_fixture(&fx, &fx.dir);
}

#[test]
fn tiny_config_in_hub_layout_matches_transformers() {
    let fx = load_fixture(&fixtures().join("esm_tiny"));
    let tmp = tempfile::tempdir().unwrap();
    hub_layout_copy(&fx.dir, tmp.path());
    check_fixture(&fx, tmp.path());
}

#[test]
fn esm2_t6_8m_config_matches_transformers() {
    let dir = fixtures().join("generated/esm2_t6_8M");
    if !dir.join("reference.safetensors").is_file() {
        eprintln!(
            "SKIPPED: {} is absent; generate it with `python scripts/make_parity_fixtures.py 8M {}` (needs torch + transformers)",
            dir.display(),
            dir.display()
        );
        return;
    }
    let fx = load_fixture(&dir);
    check_fixture(&fx, &fx.dir);
}
