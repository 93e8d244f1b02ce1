//! End to end: `finetune` on a miniature copy of the shared-data layout with the tiny ESM-2
//! fixture writes a directory whose heads load and answer through `plm_model::predict`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plm_model::predict::{self, ContactSource};
use plm_model::{DeviceSpec, EmbeddingCache, Engine, EngineOptions, LoadOptions, TaskHeads};
use plm_train::finetune::{run, FinetuneArgs};
use plm_train::quantize::{self, QuantizeArgs};

mod common;
use rand::{Rng, SeedableRng};

const AA: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";

fn random_sequence(rng: &mut rand::rngs::StdRng, len: usize) -> String {
    (0..len)
        .map(|_| AA[rng.random_range(0..AA.len())] as char)
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A miniature of `../shared/data` with the same file formats.
fn mini_data(dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut ec = String::from("Entry\tEC number\tSequence\n");
    let mut ec_test = ec.clone();
    for i in 0..60 {
        let label = ["1.1.1.1", "2.7.11.1", "3.4.21.4;3.4.21.5"][i % 3];
        let line = format!(
            "P{i}\t{label}\t{}\n",
            random_sequence(&mut rng, 30 + i % 20)
        );
        if i < 48 {
            ec += &line
        } else {
            ec_test += &line
        }
    }
    write(&dir.join("function/ec/train.tsv"), &ec);
    write(&dir.join("function/ec/test_new392.tsv"), &ec_test);
    for o in ["mf", "bp", "cc"] {
        let mut go = String::from("accession\tgo_terms\tsequence\n");
        for i in 0..50 {
            let terms = ["GO:0000003", "GO:0000004", "GO:0000003,GO:0000005"][i % 3];
            go += &format!("G{o}{i}\t{terms}\t{}\n", random_sequence(&mut rng, 40));
        }
        write(&dir.join(format!("function/go/{o}_18000.tsv")), &go);
    }
    write(
        &dir.join("function/go/go_graph.tsv"),
        "GO:0000003\tGO:0000002\t1\tis_a\nGO:0000004\tGO:0000002\t1\tis_a\nGO:0000005\tGO:0000003\t1\tpart_of\n",
    );
    write(
        &dir.join("function/go/go_names.tsv"),
        "GO:0000002\tparent\nGO:0000003\tchild a\nGO:0000004\tchild b\nGO:0000005\tgrandchild\n",
    );
    let mut fasta = String::new();
    let mut guo = String::new();
    let ids: Vec<String> = (0..30).map(|i| format!("4932.Y{i}")).collect();
    for id in &ids {
        let s = random_sequence(&mut rng, 35);
        fasta += &format!(">{id}\n{s}\n");
        guo += &format!("{id}\t{s}\n");
    }
    let mut pairs = String::new();
    for k in 0..120 {
        let (a, b) = (&ids[k % 30], &ids[(k * 7 + 3) % 30]);
        pairs += &format!("{a}\t{b}\t{}\n", if k % 4 == 0 { "1.0" } else { "0.0" });
    }
    for name in ["dscript_yeast", "mcaps_human", "mcaps_fly"] {
        write(&dir.join(format!("ppi/{name}.fasta")), &fasta);
        write(&dir.join(format!("ppi/{name}_pairs.tsv")), &pairs);
    }
    write(&dir.join("ppi/guo_yeast_sequences.tsv"), &guo);
    write(
        &dir.join("ppi/guo_yeast_pairs.tsv"),
        &pairs.replace(".0\n", "\n"),
    );
    let three_line = |rng: &mut rand::rngs::StdRng, prefix: &str, n: usize| -> String {
        let mut s = String::new();
        for i in 0..n {
            let seq = random_sequence(rng, 30 + i);
            let labels: String = seq
                .chars()
                .map(|c| if "CHDE".contains(c) { '1' } else { '0' })
                .collect();
            s += &format!(">{prefix}{i}A\n{seq}\n{labels}\n");
        }
        s
    };
    for l in [
        "DNA", "RNA", "PEP", "PRO", "ATP", "HEM", "ZN", "CA", "MG", "MN",
    ] {
        write(
            &dir.join(format!("binding/gpsite/{l}_train.txt")),
            &three_line(&mut rng, &format!("{l}tr"), 6),
        );
        write(
            &dir.join(format!("binding/gpsite/{l}_test.txt")),
            &three_line(&mut rng, &format!("{l}te"), 3),
        );
    }
    for (set, n) in [("Train_335", 8), ("Test_60", 4)] {
        let text = three_line(&mut rng, set, n);
        write(&dir.join(format!("binding/graphppis/{set}.fa")), &text);
        let mut contacts = String::from("chain\ti\tj\tdistance\n");
        for (k, chunk) in text.lines().collect::<Vec<_>>().chunks(3).enumerate() {
            let id = &chunk[0][1..];
            let len = chunk[1].len();
            for i in 0..len {
                for j in i + 1..len {
                    let d = if (i + j + k) % 9 == 0 { 6.0 } else { 12.0 };
                    contacts += &format!("{id}\t{i}\t{j}\t{d}\n");
                }
            }
        }
        let file =
            std::fs::File::create(dir.join(format!("binding/graphppis/{set}_contacts.tsv.gz")))
                .unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        gz.write_all(contacts.as_bytes()).unwrap();
        gz.finish().unwrap();
    }
}

fn tiny_model() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../model/tests/fixtures/esm_tiny")
}

#[test]
fn finetune_writes_a_deployable_directory_with_every_head() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    mini_data(&data);
    let mmseqs = std::process::Command::new("mmseqs")
        .arg("version")
        .output()
        .is_ok();
    let mut tasks = vec!["contacts", "ec", "ppi", "binding"];
    if mmseqs {
        tasks.push("go");
    } else {
        eprintln!("GO head skipped: mmseqs (Debian package mmseqs2) is not installed");
    }
    let out = tmp.path().join("out/tiny-heads");
    let args = FinetuneArgs {
        model: tiny_model().into(),
        data: data.clone(),
        out: out.clone(),
        tasks: tasks.iter().map(|t| t.to_string()).collect(),
        cache: Some(tmp.path().join("cache")),
        layers: vec![-2, -1],
        hidden: 16,
        gnn_layers: 1,
        contact_threshold: 0.3,
        go_proteins: 50,
        go_min_count: 2,
        cross_species_pairs: 40,
        guo_pairs: 100,
        binding_proteins: 5,
        epochs: 2,
        binding_epochs: 1,
        contact_epochs: 1,
        ablations: true,
        seed: 5,
        update: false,
    };
    run(args.clone(), DeviceSpec::Cpu).unwrap();

    let heads = TaskHeads::open(&out, &candle_core::Device::Cpu)
        .unwrap()
        .unwrap();
    let mut expected = vec!["ec", "ppi", "binding"];
    if mmseqs {
        expected.extend(["go_mf", "go_bp", "go_cc"]);
    }
    for h in expected {
        assert!(
            heads.config.head_names().contains(&h.to_string()),
            "missing {h}"
        );
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(results["ec"]["mlp"]["f1"].is_number());
    assert!(results["ppi"]["guo_yeast_5fold"]["accuracy_mean"].is_number());
    // --guo-pairs draws that many of the file's 120 pairs.
    assert_eq!(results["ppi"]["guo_yeast_5fold"]["pairs"], 100);
    assert!(results["binding"]["variants"]["LM + gated GNN"]["ZN"]["auroc"].is_number());
    assert!(results["contacts"]["precision_at_l5_long_range_after"].is_number());

    let engine = Engine::load(
        &out,
        LoadOptions::default(),
        EngineOptions::default(),
        Arc::new(EmbeddingCache::new(1 << 20)),
    )
    .unwrap();
    let seq = "MKTAYIAKQRQISFVKSHFSRQ";
    let query = predict::FunctionQuery {
        ontology: "ec",
        method: plm_model::homology::Method::Model,
        top_k: 2,
        min_score: 0.0,
    };
    let f = predict::predict_function(&engine, Some(&heads), None, seq, query, Default::default())
        .unwrap();
    assert_eq!(f.len(), 2);
    assert!(f[0].score >= f[1].score);
    let p = predict::predict_ppi(
        &engine,
        Some(&heads),
        None,
        &[(seq, "MQIFVKTLTG"), ("MQIFVKTLTG", seq)],
        plm_model::homology::Method::Model,
        Default::default(),
    )
    .unwrap();
    assert_eq!(p[0], p[1]);
    let query = predict::BindingQuery {
        ligand: None,
        threshold: 0.0,
        source: ContactSource::Predicted,
        method: plm_model::homology::Method::Model,
    };
    let b = predict::predict_binding_sites(&engine, Some(&heads), None, seq, query, &|_| {
        Default::default()
    })
    .unwrap();
    assert_eq!(b.len(), seq.len() * 11);

    // A second run reuses the cached features and gives the same heads (same seed).
    let first = std::fs::read(out.join("heads.safetensors")).unwrap();
    run(args.clone(), DeviceSpec::Cpu).unwrap();
    assert_eq!(first, std::fs::read(out.join("heads.safetensors")).unwrap());

    updating_one_head_keeps_the_others(tmp.path(), &args);
    quantizing_gates_every_head(tmp.path(), &out, &data);
    fitting_the_interface_prior(&out, &data);
}

/// `--update` retrains only the named heads of an existing model directory: the other heads'
/// weights, metrics and measured results are carried over unchanged.
fn updating_one_head_keeps_the_others(tmp: &Path, first: &FinetuneArgs) {
    let updated = tmp.join("out/updated");
    let args = FinetuneArgs {
        model: first.out.clone().into(),
        out: updated.clone(),
        tasks: vec!["ec".into()],
        update: true,
        seed: first.seed + 1,
        ..first.clone()
    };
    // The extra results of later commands (here a stand-in for `plm-train homology`'s) survive,
    // except those of the replaced head.
    let results_path = first.out.join("results.json");
    let mut results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results_path).unwrap()).unwrap();
    results["homology"] = serde_json::json!({"ec": {"stale": true}, "ppi": {"kept": true}});
    std::fs::write(&results_path, results.to_string()).unwrap();
    run(args.clone(), DeviceSpec::Cpu).unwrap();

    let before = candle_core::safetensors::load(
        first.out.join("heads.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let after = candle_core::safetensors::load(
        updated.join("heads.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let is_ec = |k: &str| k.starts_with("function.ec.") || k.starts_with("neighbours.ec.");
    for (name, t) in before.iter().filter(|(k, _)| !is_ec(k)) {
        let kept = after
            .get(name)
            .unwrap_or_else(|| panic!("{name} was dropped"));
        let values = |t: &candle_core::Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .unwrap()
        };
        assert_eq!(values(t), values(kept), "{name} changed");
    }
    assert!(after.keys().any(|k| is_ec(k)), "no EC head written");
    let heads = TaskHeads::open(&updated, &candle_core::Device::Cpu)
        .unwrap()
        .unwrap();
    let original = TaskHeads::open(&first.out, &candle_core::Device::Cpu)
        .unwrap()
        .unwrap();
    assert_eq!(heads.config.head_names(), original.config.head_names());
    assert_eq!(heads.config.ppi, original.config.ppi);
    assert_eq!(
        heads.config.metrics["finetune_updates"][0]["tasks"][0],
        "ec"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(updated.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["ppi"], original.config.metrics["results"]["ppi"]);
    assert_eq!(
        results["homology"],
        serde_json::json!({"ppi": {"kept": true}})
    );
    assert!(results["ec"]["contrastive_nearest_neighbour"]["f1"].is_number());

    // Writing over the model itself, or reading other layers than the kept heads, is refused.
    let e = run(
        FinetuneArgs {
            out: first.out.clone(),
            ..args.clone()
        },
        DeviceSpec::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is the model directory itself"), "{e}");
    let e = run(
        FinetuneArgs {
            layers: vec![-1],
            ..args
        },
        DeviceSpec::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--update: the model's heads read layers"), "{e}");
}

/// `plm-train interface-prior` writes a valid prior and its report, and `plm_binding_sites`'
/// code path applies it to the `PPI` column, on resolved residues only, when a structure's
/// geometry is given.
fn fitting_the_interface_prior(model: &Path, data: &Path) {
    plm_train::interface_prior::run(&plm_train::interface_prior::InterfacePriorArgs {
        model: model.to_path_buf(),
        data: data.to_path_buf(),
        seed: 7,
        dry_run: false,
    })
    .unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("results.json")).unwrap())
            .unwrap();
    let report = &results["interface_prior"];
    for source in ["model", "prior", "combined"] {
        assert!(report[source]["auroc"].is_number(), "{report}");
    }
    let mut heads = TaskHeads::open(model, &candle_core::Device::Cpu)
        .unwrap()
        .unwrap();
    let prior = heads.config.interface_prior().expect("a prior").clone();
    assert_eq!(prior.ligands, ["PPI"]);

    let engine = Engine::load(
        model,
        LoadOptions::default(),
        EngineOptions::default(),
        Arc::new(EmbeddingCache::new(0)),
    )
    .unwrap();
    let seq = "MKTAYIAKQRQISFVKSHFSRQ";
    // Residues 0..18 resolved (chain neighbours at 3.8 Å, a few close pairs); 18.. not.
    let mut pairs: Vec<(usize, usize, f32)> = (0..17).map(|i| (i, i + 1, 3.8)).collect();
    pairs.extend([(0, 9, 6.5), (2, 12, 9.0), (4, 15, 11.0)]);
    let geometry = plm_model::surface::ChainGeometry::from_pairs(seq.len(), pairs);
    let features = geometry.features().unwrap();
    let scores = |heads: &TaskHeads| {
        predict::model_binding_scores(
            &engine,
            Some(heads),
            seq,
            ContactSource::Geometry(&geometry),
        )
        .unwrap()
    };
    heads.config.interface_prior = None;
    let gnn = scores(&heads);
    heads.config.interface_prior = Some(prior.with_alpha(1.0));
    let blended = scores(&heads);
    let prior = heads.config.interface_prior.clone().unwrap();
    for ((ligand, g), (_, b)) in gnn.iter().zip(&blended) {
        for (i, (g, b)) in g.iter().zip(b).enumerate() {
            let expected = match (&features[i], ligand.as_str()) {
                (Some(f), "PPI") => prior.score(f),
                _ => *g,
            };
            assert!(
                (b - expected).abs() < 1e-6,
                "{ligand} {i}: {b} vs {expected}"
            );
        }
    }
}

/// `plm-train quantize` of a model with heads: refused without task data, and with it the
/// report holds each head's metric at both precisions, and the gate's verdict follows them.
fn quantizing_gates_every_head(tmp: &Path, model: &Path, data: &Path) {
    let quantize_args = |to: &str, task_data: Option<PathBuf>| QuantizeArgs {
        model: model.to_path_buf(),
        to: tmp.join(to),
        precision: plm_model::Precision::Int8,
        name: None,
        data: common::synthetic_fasta(tmp),
        sequences: 40,
        max_len: 1022,
        seed: 1,
        task_data,
        task_items: 30,
        skip_task_gate: false,
    };
    let refused = quantize::run(&quantize_args("no-task-data", None)).unwrap_err();
    assert!(
        format!("{refused:#}").contains("--task-data"),
        "{refused:#}"
    );
    assert!(!tmp.join("no-task-data").exists());

    let result = quantize::run(&quantize_args("gated", Some(data.to_path_buf())));
    let report: serde_json::Value = match &result {
        Ok(()) => {
            let manifest = plm_model::Checkpoint::open(tmp.join("gated"))
                .unwrap()
                .manifest
                .unwrap();
            manifest.training["quantization"].clone()
        }
        // A failing gate writes nothing and puts the report in the error.
        Err(e) => {
            let text = format!("{e:#}");
            assert!(!tmp.join("gated").exists());
            serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
        }
    };
    let gate = &report["task_gate"];
    let metrics = gate["metrics"].as_object().unwrap();
    for head in ["ec", "ppi", "binding_ZN"] {
        let m = &metrics[head];
        assert!(
            m["f32"].is_number() && m["quantised"].is_number(),
            "{head}: {gate}"
        );
    }
    let within = metrics.values().all(|m| {
        let (f, q) = (m["f32"].as_f64().unwrap(), m["quantised"].as_f64().unwrap());
        (f - q) / f <= quantize::tasks::MAX_RELATIVE_DROP
    });
    assert_eq!(gate["passed"], within, "{gate}");
    assert_eq!(result.is_ok(), within && report["gates"]["passed"] == true);
}

#[test]
fn unknown_tasks_and_missing_data_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = FinetuneArgs {
        model: tiny_model().into(),
        data: tmp.path().to_path_buf(),
        out: tmp.path().join("out"),
        tasks: vec!["ec".into()],
        cache: None,
        layers: vec![-1],
        hidden: 8,
        gnn_layers: 1,
        contact_threshold: 0.5,
        go_proteins: 10,
        go_min_count: 1,
        cross_species_pairs: 10,
        guo_pairs: 10,
        binding_proteins: 10,
        epochs: 1,
        binding_epochs: 1,
        contact_epochs: 1,
        ablations: false,
        seed: 1,
        update: false,
    };
    let e = run(
        FinetuneArgs {
            tasks: vec!["kegg".into()],
            ..base.clone()
        },
        DeviceSpec::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown task 'kegg'"), "{e}");
    let e = run(base.clone(), DeviceSpec::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("does not look like the shared data directory"),
        "{e}"
    );
    // A GPU asked for is used or refused, never silently replaced by the CPU.
    if !candle_core::utils::cuda_is_available() {
        let data = tmp.path().join("data");
        mini_data(&data);
        let e = run(FinetuneArgs { data, ..base }, DeviceSpec::Cuda(0)).unwrap_err();
        assert!(format!("{e:#}").contains("no CUDA support"), "{e:#}");
    }
}
