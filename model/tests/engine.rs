//! Engine behaviour on the committed tiny checkpoint: batching equivalence, windows, pooling,
//! caching, and clear errors for corrupt or mismatched checkpoint files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plm_model::{
    Checkpoint, EmbeddingCache, Engine, EngineOptions, LoadOptions, LongSequencePolicy, PlmError,
    Pooling,
};

const SEQS: [&str; 5] = [
    "MKTAYIAKQR",
    "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG",
    "GSHMSLFDFFKNKGSAATATDRLKLHLLVEEGQSLMMGEQGGLTADMTLHWLRSGMSLAEAVRRLLIEEG",
    "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRV",
    "A",
];

fn tiny() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/esm_tiny")
}

fn engine_with(options: EngineOptions, cache_bytes: usize) -> Engine {
    Engine::load(
        tiny(),
        LoadOptions::default(),
        options,
        Arc::new(EmbeddingCache::new(cache_bytes)),
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Bit-identical results whatever else shares the batch: what lets a shared worker merge
/// requests of different sessions without changing any answer.
#[test]
fn results_do_not_depend_on_batch_neighbours() {
    let engine = engine_with(
        EngineOptions {
            max_tokens_per_batch: 100_000,
            ..Default::default()
        },
        0,
    );
    let long = SEQS[3];
    for len in (1..=24).chain([40, 70, 93]) {
        let s = &long[..len];
        let alone = engine.embed(&[s], None, Pooling::Mean).unwrap();
        let with_others = engine
            .embed(&[SEQS[1], s, long, SEQS[0]], None, Pooling::Mean)
            .unwrap();
        assert_eq!(alone[0], with_others[1], "length {len}");
        let alone = engine.embed_residues(&[s], &[None]).unwrap();
        let with_others = engine.embed_residues(&[long, s], &[None]).unwrap();
        assert_eq!(alone[0], with_others[1], "residues, length {len}");
    }
}

#[test]
fn batched_equals_one_by_one() {
    let batched = engine_with(
        EngineOptions {
            max_tokens_per_batch: 100_000,
            ..Default::default()
        },
        0,
    );
    let single = engine_with(
        EngineOptions {
            max_tokens_per_batch: 1,
            ..Default::default()
        },
        0,
    );
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
        for layer in [None, Some(0), Some(1)] {
            let all = batched.embed(&SEQS, layer, pooling).unwrap();
            for (i, s) in SEQS.iter().enumerate() {
                let one = single.embed(&[s], layer, pooling).unwrap();
                let d = max_diff(&all[i], &one[0]);
                assert!(d <= 1e-5, "{pooling:?} layer {layer:?} seq {i}: {d}");
            }
        }
    }
    let res_all = batched.embed_residues(&SEQS, &[None, Some(0)]).unwrap();
    for (i, s) in SEQS.iter().enumerate() {
        let one = single.embed_residues(&[s], &[None, Some(0)]).unwrap();
        assert_eq!(
            (res_all[i].rows, res_all[i].cols),
            (s.len(), 2 * batched.hidden_size())
        );
        assert!(max_diff(&res_all[i].data, &one[0].data) <= 1e-5);
    }
}

#[test]
fn pooling_matches_residue_features() {
    let e = engine_with(EngineOptions::default(), 0);
    let res = e.embed_residues(&[SEQS[1]], &[None]).unwrap().remove(0);
    let mean = e.embed(&[SEQS[1]], None, Pooling::Mean).unwrap().remove(0);
    let max = e.embed(&[SEQS[1]], None, Pooling::Max).unwrap().remove(0);
    for c in 0..res.cols {
        let col: Vec<f32> = (0..res.rows).map(|r| res.data[r * res.cols + c]).collect();
        let m = col.iter().sum::<f32>() / col.len() as f32;
        assert!((m - mean[c]).abs() < 1e-5);
        assert_eq!(
            col.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            max[c]
        );
    }
}

#[test]
fn long_sequences_error_or_window() {
    let long: String = SEQS[1].repeat(3); // 228 residues
    let strict = engine_with(
        EngineOptions {
            max_residues: Some(100),
            ..Default::default()
        },
        0,
    );
    assert!(matches!(
        strict.embed(&[&long], None, Pooling::Mean),
        Err(PlmError::SequenceTooLong {
            length: 228,
            limit: 100
        })
    ));
    let windowed = engine_with(
        EngineOptions {
            max_residues: Some(100),
            long_sequences: LongSequencePolicy::Window,
            window_overlap: 40,
            ..Default::default()
        },
        0,
    );
    let res = windowed
        .embed_residues(&[&long], &[None])
        .unwrap()
        .remove(0);
    assert_eq!(res.rows, 228);
    // The first residues are covered by the first window only: identical to embedding it alone.
    let first = windowed
        .embed_residues(&[&long[..100]], &[None])
        .unwrap()
        .remove(0);
    assert!(max_diff(&res.data[..30 * res.cols], &first.data[..30 * res.cols]) <= 1e-5);
    let contacts = windowed.contacts(&long).unwrap();
    assert_eq!((contacts.rows, contacts.cols), (228, 228));
    // A sequence that fits is unaffected by the policy.
    let a = strict.embed(&[SEQS[1]], None, Pooling::Mean).unwrap();
    let b = windowed.embed(&[SEQS[1]], None, Pooling::Mean).unwrap();
    assert_eq!(a, b);
}

#[test]
fn cache_serves_repeats_and_stays_bounded() {
    let e = engine_with(EngineOptions::default(), 64 * 1024);
    let first = e.embed(&SEQS, None, Pooling::Mean).unwrap();
    let stats = e.cache().stats();
    assert_eq!(stats.hits, 0);
    let again = e.embed(&SEQS, None, Pooling::Mean).unwrap();
    assert_eq!(first, again);
    assert_eq!(e.cache().stats().hits, SEQS.len() as u64);
    for _ in 0..3 {
        e.embed_residues(&SEQS, &[None, Some(0), Some(1)]).unwrap();
        assert!(e.cache().stats().bytes <= 64 * 1024);
    }
    assert!(e.cache().stats().evictions > 0);
    // Different layers or pooling are different cache entries.
    let l0 = e.embed(&[SEQS[0]], Some(0), Pooling::Mean).unwrap();
    assert_ne!(l0[0], first[0]);
}

#[test]
fn invalid_input_names_the_sequence() {
    let e = engine_with(EngineOptions::default(), 0);
    let err = e
        .embed(&["MKT", "MK1"], None, Pooling::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 2") && err.contains("'1' at position 3"),
        "{err}"
    );
    assert!(matches!(
        e.embed(&[""], None, Pooling::Mean),
        Err(PlmError::EmptySequence)
    ));
    assert!(e.resolve_layer(Some(3)).is_err());
    assert_eq!(e.resolve_layer(Some(-1)).unwrap(), 2);
    assert_eq!(e.resolve_layer(Some(-3)).unwrap(), 0);
    assert!(e.resolve_layer(Some(-4)).is_err());
}

/// The error message of loading a checkpoint directory that must fail.
fn load_error(dir: &Path) -> String {
    Engine::load(
        dir,
        LoadOptions::default(),
        EngineOptions::default(),
        Arc::new(EmbeddingCache::new(0)),
    )
    .unwrap_err()
    .to_string()
}

fn copy_tiny(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "model.safetensors", "vocab.txt"] {
        std::fs::copy(tiny().join(f), dst.join(f)).unwrap();
    }
}

#[test]
fn corrupt_and_mismatched_checkpoints_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");

    // Missing directory and missing files.
    let err = Checkpoint::open(tmp.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent"), "{err}");
    copy_tiny(&dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    // Truncated weights.
    copy_tiny(&dir);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    // Garbage weights.
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    // Config that does not match the weights.
    copy_tiny(&dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"hidden_size\": 64", "\"hidden_size\": 128"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("shape"),
        "{err}"
    );

    // Malformed config.
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");

    // Manifest fingerprint that does not match the weights.
    copy_tiny(&dir);
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"name": "x", "fingerprint": "00"}"#,
    )
    .unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("fingerprint"),
        "{err}"
    );

    // Missing tokenizer.
    copy_tiny(&dir);
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn contacts_and_logits_have_sequence_shapes() {
    let e = engine_with(EngineOptions::default(), 0);
    let c = e.contacts(SEQS[2]).unwrap();
    assert_eq!((c.rows, c.cols), (SEQS[2].len(), SEQS[2].len()));
    assert!(c.data.iter().all(|p| (0.0..=1.0).contains(p)));
    for i in 0..c.rows {
        for j in 0..c.cols {
            assert!((c.data[i * c.cols + j] - c.data[j * c.cols + i]).abs() < 1e-6);
        }
    }
    let lg = e.logits(&[SEQS[0]]).unwrap().remove(0);
    assert_eq!((lg.rows, lg.cols), (SEQS[0].len() + 2, 33));
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// An int8 model is a model of its own: another fingerprint, close to the f32 answers, and,
/// like the f32 model, the same bits whatever shares the batch.
#[test]
fn an_int8_checkpoint_is_its_own_model_close_to_f32_and_batch_independent() {
    low_precision_model_is_its_own_close_and_batch_independent(plm_model::Precision::Int8);
}

/// The same for bf16.
#[test]
fn a_bf16_checkpoint_is_its_own_model_close_to_f32_and_batch_independent() {
    low_precision_model_is_its_own_close_and_batch_independent(plm_model::Precision::Bf16);
}

fn low_precision_model_is_its_own_close_and_batch_independent(precision: plm_model::Precision) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("tiny-{}", precision.as_str());
    let dir = tmp.path().join(&name);
    copy_tiny(&dir);
    std::fs::write(
        dir.join("manifest.json"),
        format!(
            r#"{{"name": "{name}", "precision": "{}"}}"#,
            precision.as_str()
        ),
    )
    .unwrap();
    let open = |d: &Path| {
        Engine::load(
            d,
            LoadOptions::default(),
            EngineOptions {
                max_tokens_per_batch: 100_000,
                ..Default::default()
            },
            Arc::new(EmbeddingCache::new(0)),
        )
        .unwrap()
    };
    let (full, low) = (open(&tiny()), open(&dir));
    assert_eq!(low.checkpoint().precision(), precision);
    assert_ne!(low.fingerprint(), full.fingerprint());
    assert_eq!(low.checkpoint().weights_sha256, full.fingerprint());
    assert_eq!(low.fingerprint(), precision.identity(full.fingerprint()));

    let a = full.embed(&SEQS, None, Pooling::Mean).unwrap();
    let b = low.embed(&SEQS, None, Pooling::Mean).unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_ne!(
            x, y,
            "sequence {i}: {precision:?} must differ from f32 somewhere"
        );
        let c = cosine(x, y);
        assert!(c > 0.999, "sequence {i}: cosine {c}");
    }
    // Residue states and logits too (the tensor path for contacts uses the same weights).
    let residues = low.embed_residues(&[SEQS[2]], &[None]).unwrap();
    let full_residues = full.embed_residues(&[SEQS[2]], &[None]).unwrap();
    assert!(cosine(&residues[0].data, &full_residues[0].data) > 0.999);

    let long = SEQS[3];
    for len in [1, 7, 16, 33, 93] {
        let s = &long[..len];
        let alone = low.embed(&[s], None, Pooling::Mean).unwrap();
        let with_others = low
            .embed(&[SEQS[1], s, long, SEQS[0]], None, Pooling::Mean)
            .unwrap();
        assert_eq!(alone[0], with_others[1], "length {len}");
    }
}

#[test]
fn an_unknown_precision_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_tiny(&dir);
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"name": "m", "precision": "int4"}"#,
    )
    .unwrap();
    let e = load_error(&dir);
    assert!(e.contains("manifest.json") && e.contains("int4"), "{e}");
}

/// A binding-site query's one pass gives the contacts of `contacts` and the features of
/// `embed_residues` (to rounding), and the same bits again from the cache.
#[test]
fn residues_and_contacts_come_from_one_pass_and_agree_with_the_separate_calls() {
    let engine = engine_with(EngineOptions::default(), 64 << 20);
    let seq = SEQS[2];
    let layers = [Some(1), None];
    let (features, contacts) = engine.residues_and_contacts(seq, &layers).unwrap();
    assert_eq!(contacts, engine.contacts(seq).unwrap());
    let separate = engine.embed_residues(&[seq], &layers).unwrap().remove(0);
    assert_eq!(
        (features.rows, features.cols),
        (separate.rows, separate.cols)
    );
    assert_eq!(features.rows, seq.len());
    assert!(max_diff(&features.data, &separate.data) < 1e-4);
    let again = engine.residues_and_contacts(seq, &layers).unwrap();
    assert_eq!(again, (features, contacts));
}

/// An interrupt check that says stop ends the call with `PlmError::Cancelled` (a returned
/// error, not an unwinding panic); one that never does changes nothing.
#[test]
fn a_stopping_interrupt_check_returns_cancelled() {
    fn stop() -> bool {
        true
    }
    fn go_on() -> bool {
        false
    }
    let cancelled = engine_with(
        EngineOptions {
            interrupt_check: Some(stop),
            ..Default::default()
        },
        0,
    );
    let err = cancelled
        .embed(&SEQS, None, Pooling::Mean)
        .expect_err("stopped");
    assert!(matches!(err, plm_model::PlmError::Cancelled), "{err}");
    let running = engine_with(
        EngineOptions {
            interrupt_check: Some(go_on),
            ..Default::default()
        },
        0,
    );
    let plain = engine_with(EngineOptions::default(), 0);
    assert_eq!(
        running.embed(&SEQS, None, Pooling::Mean).unwrap(),
        plain.embed(&SEQS, None, Pooling::Mean).unwrap()
    );
}
