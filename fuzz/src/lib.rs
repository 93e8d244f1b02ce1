//! Fuzz targets for every parser that reads user or file input.
//!
//! Each target takes arbitrary bytes and must neither panic nor abort: errors are fine, a
//! crash is a bug. Where a property must hold for every accepted input (a cleaned sequence
//! tokenizes to one token per residue, a structure maps onto its own sequence, an encoded
//! request decodes to itself, hits stay inside their sequences) the target asserts it, so
//! the fuzzer finds wrong answers as well as crashes.
//!
//! The afl binaries in `src/bin` call these functions (`scripts/fuzz.sh` builds and runs
//! them); `tests/corpora.rs` replays the committed corpora and every past crash through the
//! same functions in the normal test suite.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use plm_align::{Reference, SearchParams};
use plm_model::heads::{
    BindingHeadConfig, FunctionHeadConfig, HeadsConfig, PpiHeadConfig, TaskHeads, TermVocabulary,
};
use plm_model::structure::{map_to_sequence, parse_structure};
use plm_model::tokenizer::clean_sequence;
use plm_model::{DeviceSpec, EmbeddingCache, LongSequencePolicy, Pooling, ProteinTokenizer};
use plm_serve::protocol::{self, Frame, Hello, Response, Welcome};
use plm_serve::{ExecOptions, ModelRef, ModelRegistry, Request, RequestSettings, Task};

/// Names of the targets, as used for `fuzz/corpus/<name>` and the afl binaries `fuzz_<name>`.
pub const TARGETS: [&str; 5] = ["sequence", "structure", "checkpoint", "protocol", "align"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8], checkpoints: &Checkpoints) {
    match name {
        "sequence" => sequence(data),
        "structure" => structure(data),
        "checkpoint" => checkpoints.run(data),
        "protocol" => checkpoints.protocol(data),
        "align" => align(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Sequence cleaning, tokenization and window planning.
pub fn sequence(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let tokenizer = ProteinTokenizer::esm();
    match clean_sequence(&text) {
        Ok(clean) => {
            assert!(!clean.is_empty(), "an accepted sequence is never empty");
            let ids = tokenizer
                .encode_clean(&clean)
                .expect("a cleaned sequence tokenizes");
            assert_eq!(
                ids.len(),
                clean.chars().count() + 2,
                "one token per residue"
            );
            assert_eq!(
                tokenizer.encode(&text).ok(),
                Some(ids),
                "encode = clean + encode"
            );
        }
        Err(_) => assert!(tokenizer.encode(&text).is_err()),
    }
    // Windows of any length, size and overlap cover every residue and stay inside.
    if let [a, b, c, ..] = data {
        let length = 1 + (usize::from(*a) << 4 | usize::from(*b)) % 4000;
        let window = 1 + usize::from(*c) * 3;
        let overlap = data.get(3).map_or(0, |&o| usize::from(o));
        let starts = plm_model::window::plan_windows(length, window, overlap);
        let mut covered = 0;
        for &s in &starts {
            assert!(s <= covered, "window at {s} leaves a gap before it");
            covered = covered.max((s + window).min(length));
        }
        assert_eq!(covered, length, "windows cover the sequence");
    }
}

/// PDB / mmCIF parsing, the sequence–structure mapping and the residue graph. The first line
/// of the input is the sequence; the rest is the structure text.
pub fn structure(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (sequence, structure) = text.split_once('\n').unwrap_or(("", &text));
    let chain = sequence.strip_prefix("chain=").map(|c| c.trim());
    let Ok(trace) = parse_structure(structure, chain) else {
        return;
    };
    let own = trace.sequence();
    assert!(!own.is_empty(), "an accepted trace has residues");
    let mapping = map_to_sequence(&own, &trace).expect("a trace maps onto its own sequence");
    assert_eq!(mapping.len(), own.len());
    let options = plm_model::graph::GraphOptions::default();
    let graph =
        plm_model::graph::ResidueGraph::from_structure(own.len(), &trace, &mapping, &options)
            .expect("graph of a mapped structure");
    assert_eq!(graph.num_nodes(), own.len());
    if let Ok(clean) = clean_sequence(sequence) {
        if let Ok(mapping) = map_to_sequence(&clean, &trace) {
            assert!(mapping.iter().flatten().all(|&p| p < clean.len()));
            let _ = plm_model::graph::ResidueGraph::from_structure(
                clean.len(),
                &trace,
                &mapping,
                &options,
            );
        }
    }
}

/// The reference search: `0` then a serialized reference, `1`, `2` or `3` then a function,
/// interaction or binding reference-set file (`models/reference/*.plmref`), or anything else
/// then lines of text, the query first and reference sequences after it.
pub fn align(data: &[u8]) {
    let params = SearchParams {
        with_pairs: true,
        max_evalue: 1e6,
        ..SearchParams::default()
    };
    match data.split_first() {
        Some((0, bytes)) => {
            if let Ok(reference) = Reference::from_bytes(bytes) {
                for query in ["MKTAYIAKQRQISFVKSHFSRQ", "A", "WWWWWWWWWWWWW"] {
                    if let Ok(hits) = reference.search(query, &params) {
                        check_hits(&reference, query, &hits);
                    }
                }
            }
        }
        Some((1, bytes)) => {
            if let Ok(set) = plm_model::homology::FunctionReference::from_file_bytes(bytes) {
                for query in ["MKTAYIAKQRQISFVKSHFSRQ", "WWWWWWWWWWWWW"] {
                    if let Ok(hits) = set.search(query) {
                        check_hits(set.proteins(), query, &hits);
                        let t = set.transfer(&hits, 4.0);
                        assert!(t.scores.values().all(|s| (0.0..=1.0).contains(s)));
                        assert!(t.scores.keys().all(|&k| (k as usize) < set.terms.len()));
                    }
                }
            }
        }
        Some((2, bytes)) => {
            if let Ok(set) = plm_model::homology::InteractionReference::from_file_bytes(bytes) {
                let a = set.search("MKTAYIAKQRQISFVKSHFSRQ").unwrap_or_default();
                let b = set.search("MQIFVKTLTGKTITLEVEPSD").unwrap_or_default();
                for (x, y) in [(&a, &b), (&b, &a), (&a, &a)] {
                    if let Some(i) = set.interolog(x, y, 2.0) {
                        assert!((0.0..=1.0).contains(&i.score));
                    }
                }
            }
        }
        Some((3, bytes)) => {
            if let Ok(set) = plm_model::homology::BindingReference::from_file_bytes(bytes) {
                for query in ["MKTAYIAKQRQISFVKSHFSRQ", "WWWWWWWWWWWWW"] {
                    if let Ok(hits) = set.search(query) {
                        let t = set.transfer(query.len(), &hits, 2.0);
                        assert_eq!(t.scores.len(), set.ligands.len());
                        assert!(t.scores.iter().all(|s| s.len() == query.len()));
                        assert!(t
                            .scores
                            .iter()
                            .flatten()
                            .flatten()
                            .all(|s| (0.0..=1.0).contains(s)));
                    }
                }
            }
        }
        Some((_, bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            let mut lines = text.lines();
            let query = lines.next().unwrap_or_default();
            let targets: Vec<(String, &str)> = lines
                .take(64)
                .enumerate()
                .map(|(i, s)| (format!("t{i}"), s))
                .collect();
            if let Ok(reference) = Reference::build(targets.iter().map(|(id, s)| (id.as_str(), *s)))
            {
                if let Ok(hits) = reference.search(query, &params) {
                    check_hits(&reference, query, &hits);
                }
                let bytes = reference.to_bytes().expect("a built reference serializes");
                let again = Reference::from_bytes(&bytes).expect("and reads back");
                assert_eq!(again.len(), reference.len());
            }
            if let Some((_, target)) = targets.first() {
                if let Ok(a) = plm_align::align_pair(query, target) {
                    assert!(a.identities <= a.columns && a.query_end <= query.len());
                }
            }
        }
        None => {}
    }
}

fn check_hits(reference: &Reference, query: &str, hits: &[plm_align::Hit]) {
    let qlen = query.chars().count();
    for hit in hits {
        let target = reference
            .sequence(hit.target_index)
            .expect("a hit names a target of the reference");
        assert!(
            (0.0..=1.0).contains(&hit.identity),
            "identity {}",
            hit.identity
        );
        assert!(hit.evalue >= 0.0 && !hit.evalue.is_nan());
        for &(q, t) in &hit.pairs {
            let (q, t) = (q as usize, t as usize);
            assert!(
                q < qlen && t < target.len(),
                "pair ({q}, {t}) outside the sequences"
            );
        }
    }
}

/// A scratch copy of a small but complete checkpoint (language model, tokenizer, manifest,
/// function, interaction and binding heads) in which a fuzz input replaces one file.
pub struct Checkpoints {
    _tmp: tempfile::TempDir,
    seed: PathBuf,
    scratch: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

/// The files of a checkpoint a fuzz input may replace, selected by its first byte.
pub const CHECKPOINT_FILES: [&str; 7] = [
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "manifest.json",
    "model.safetensors",
    "heads.json",
    "heads.safetensors",
];

impl Checkpoints {
    /// Writes the seed checkpoint (the committed tiny ESM-2 plus random heads) to a
    /// temporary directory.
    pub fn new() -> plm_model::Result<Self> {
        let tmp = tempfile::tempdir().map_err(|e| plm_model::PlmError::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
        let seed = tmp.path().join("seed");
        write_seed_checkpoint(&seed)?;
        let files = CHECKPOINT_FILES
            .iter()
            .filter_map(|&name| Some((name, std::fs::read(seed.join(name)).ok()?)))
            .collect();
        let scratch = tmp.path().join("scratch");
        Ok(Self {
            seed,
            scratch,
            files,
            _tmp: tmp,
        })
    }

    /// The seed checkpoint directory.
    pub fn seed(&self) -> &Path {
        &self.seed
    }

    /// The seed files (name, content), for building a corpus.
    pub fn seed_files(&self) -> &[(&'static str, Vec<u8>)] {
        &self.files
    }

    /// Replaces file `data[0] % 7` of the seed with the rest of `data`, then loads the
    /// checkpoint and runs every task on it as the server does.
    pub fn run(&self, data: &[u8]) {
        let Some((&which, content)) = data.split_first() else {
            return;
        };
        let replaced = CHECKPOINT_FILES[usize::from(which) % CHECKPOINT_FILES.len()];
        let _ = std::fs::remove_dir_all(&self.scratch);
        std::fs::create_dir_all(&self.scratch).expect("scratch directory");
        for (name, bytes) in &self.files {
            // Replaced weights would not match the manifest's fingerprint, which is checked
            // first; leave the manifest out so the weights themselves are parsed.
            let skip = *name == "manifest.json" && replaced == "model.safetensors";
            if *name != replaced && !skip {
                std::fs::write(self.scratch.join(name), bytes).expect("seed file");
            }
        }
        std::fs::write(self.scratch.join(replaced), content).expect("fuzzed file");
        // A fresh registry: it would otherwise keep the model of the previous input.
        run_every_task(
            &self.scratch,
            &ModelRegistry::new(Arc::new(EmbeddingCache::new(0))),
        );
    }

    /// Decodes `data` as each of the protocol's messages; a decoded computation is run on the
    /// seed checkpoint (whatever directory and device it names) within the server's limits.
    pub fn protocol(&self, data: &[u8]) {
        let mut reader = data;
        if let Ok(Frame::Message(request)) =
            protocol::read_frame::<Request>(&mut reader, protocol::MAX_HANDSHAKE_BYTES * 256)
        {
            let bytes = protocol::encode(&request).expect("a decoded request encodes");
            let again: Request = postcard::from_bytes(&bytes).expect("and decodes again");
            if let (Request::Compute { task: a, .. }, Request::Compute { task: b, .. }) =
                (&request, &again)
            {
                assert!(a == b || format!("{a:?}") == format!("{b:?}"), "round trip");
            }
            if let Request::Compute { settings, task, .. } = request {
                let registry = ModelRegistry::new(Arc::new(EmbeddingCache::new(1 << 20)));
                let _ = execute_on(&self.seed, &registry, &settings, &task);
            }
        }
        let _ = postcard::from_bytes::<Hello>(data);
        let _ = postcard::from_bytes::<Welcome>(data);
        let _ = postcard::from_bytes::<Response>(data);
    }
}

/// Settings of the sample requests: long sequences in windows.
pub const SAMPLE_SETTINGS: RequestSettings = RequestSettings {
    long_sequences: LongSequencePolicy::Window,
    max_length: 2000,
};

/// One request of every task the server knows, with short valid inputs.
pub fn every_task() -> Vec<Task> {
    let seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ".to_string();
    let function = |ontology: &str| Task::Function {
        sequence: seq.clone(),
        ontology: ontology.into(),
        top_k: 5,
        min_score: 0.0,
        method: plm_model::homology::Method::Combined,
    };
    vec![
        Task::Embed {
            sequences: vec![seq.clone(), "ACDE".into()],
            layer: Some(-1),
            pooling: Pooling::Mean,
        },
        Task::EmbedResidues {
            sequences: vec![seq.clone()],
            layers: vec![Some(0), None],
        },
        Task::Contacts {
            sequence: seq.clone(),
        },
        function("go_mf"),
        function("ec"),
        Task::Ppi {
            pairs: vec![(seq.clone(), "MSTNPKPQRK".into())],
            method: plm_model::homology::Method::Combined,
        },
        Task::BindingSites {
            sequence: seq.clone(),
            ligand: None,
            threshold: 0.0,
            structure: None,
            chain: None,
            method: plm_model::homology::Method::Combined,
        },
    ]
}

/// Every task of the server on the checkpoint in `dir`.
fn run_every_task(dir: &Path, registry: &ModelRegistry) {
    for task in &every_task() {
        let _ = execute_on(dir, registry, &SAMPLE_SETTINGS, task);
    }
}

fn execute_on(
    dir: &Path,
    registry: &ModelRegistry,
    settings: &RequestSettings,
    task: &Task,
) -> plm_model::Result<plm_serve::Output> {
    let model = ModelRef {
        dir: dir.to_path_buf(),
        name: "fuzz".into(),
        device: DeviceSpec::Cpu,
    };
    let options = ExecOptions {
        max_tokens_per_batch: 4096,
        threads: 1,
        max_request_bytes: 256 << 20,
        interrupt_check: None,
    };
    plm_serve::execute(registry, &model, settings, task, &options)
}

/// Writes the committed tiny ESM-2 (`model/tests/fixtures/esm_tiny`) with a tokenizer file, a
/// manifest and small random function, interaction and binding heads into `dir`.
pub fn write_seed_checkpoint(dir: &Path) -> plm_model::Result<()> {
    let fixture = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../model/tests/fixtures/esm_tiny");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| plm_model::PlmError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for name in ["config.json", "vocab.txt", "model.safetensors"] {
        std::fs::copy(fixture.join(name), dir.join(name)).map_err(io(&fixture.join(name)))?;
    }
    ProteinTokenizer::esm().save(&dir.join("tokenizer.json"))?;
    let checkpoint = plm_model::Checkpoint::open(dir)?;
    let manifest = checkpoint.describe();
    plm_model::checkpoint::write_json(&dir.join("manifest.json"), &manifest)?;

    let width = checkpoint.config.hidden_size;
    let go = TermVocabulary {
        labels: vec![
            "GO:0003674".into(),
            "GO:0005488".into(),
            "GO:0005515".into(),
        ],
        names: vec![
            "molecular_function".into(),
            "binding".into(),
            "protein binding".into(),
        ],
        ancestors: vec![vec![], vec![0], vec![0, 1]],
    };
    let ec = TermVocabulary {
        labels: vec!["1.1.1.1".into(), "2.7.11.1".into()],
        names: vec![String::new(), String::new()],
        ancestors: vec![],
    };
    let function = |terms| FunctionHeadConfig {
        input_dim: width,
        hidden: 8,
        dropout: 0.0,
        terms,
    };
    let config = HeadsConfig {
        version: 1,
        feature_layers: vec![-1],
        function: BTreeMap::from([
            ("go_mf".to_string(), function(go)),
            ("ec".into(), function(ec)),
        ]),
        ppi: Some(PpiHeadConfig {
            input_dim: width,
            hidden: 8,
            dropout: 0.0,
        }),
        binding: Some(BindingHeadConfig {
            input_dim: width,
            ligands: vec!["ZN".into(), "PPI".into()],
            gnn: plm_model::gnn::GnnConfig {
                kind: plm_model::gnn::GnnKind::Gated,
                layers: 1,
                hidden: 8,
            },
            graph: plm_model::graph::GraphOptions::default(),
            dropout: 0.0,
        }),
        neighbours: BTreeMap::new(),
        blend: Default::default(),
        interface_prior: None,
        metrics: serde_json::Value::Null,
    };
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    TaskHeads::load(vb, &config).map_err(|e| plm_model::PlmError::Internal(e.to_string()))?;
    let tensors: HashMap<String, candle_core::Tensor> = varmap
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    TaskHeads::save(dir, &config, &tensors)
}
