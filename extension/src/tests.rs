// In-server tests (`cargo pgrx test`), against the shipped default model in `models/`.

use pgrx::prelude::*;

fn scalar<T: pgrx::datum::FromDatum + pgrx::IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: NULL"))
}

/// Runs `sql` and returns "SQLSTATE: message" of the error it raises, or "no error".
fn error_of(sql: &str) -> String {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN 'no error';
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ': ' || SQLERRM; END $$",
    )
    .unwrap();
    let quoted = sql.replace('\'', "''");
    scalar::<String>(&format!("SELECT pg_temp.error_of('{quoted}')"))
}

/// Copies the default model's language-model files (no manifest, no heads) into
/// `TMP/plm-{tag}-test-PID/{name}`; returns (model directory root, model directory).
fn bare_copy_of_default(tag: &str, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = crate::settings::model_dir().join("plm-default");
    let dir = std::env::temp_dir().join(format!("plm-{tag}-test-{}", std::process::id()));
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    (dir, model)
}

const UBIQUITIN: &str = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG";

#[pg_test]
fn embed_has_model_width_and_is_deterministic() {
    let dim = scalar::<i32>("SELECT embedding_dim FROM plm_models() WHERE name = 'plm-default'");
    let len = scalar::<i32>(&format!("SELECT array_length(plm_embed('{UBIQUITIN}'), 1)"));
    assert_eq!(len, dim);
    let same = scalar::<bool>(&format!(
        "SELECT plm_embed('{UBIQUITIN}') = plm_embed(lower('{UBIQUITIN}'))"
    ));
    assert!(same, "case and cache must not change the result");
    let finite = scalar::<bool>(&format!(
        "SELECT bool_and(x = x AND abs(x) < 1e6) FROM unnest(plm_embed('{UBIQUITIN}')) x"
    ));
    assert!(finite);
}

#[pg_test]
fn layers_and_pooling_give_different_vectors() {
    let differ = scalar::<bool>(&format!(
        "SELECT plm_embed('{UBIQUITIN}', layer => 1) <> plm_embed('{UBIQUITIN}')
            AND plm_embed('{UBIQUITIN}', pooling => 'max') <> plm_embed('{UBIQUITIN}')
            AND plm_embed('{UBIQUITIN}', pooling => 'cls') <> plm_embed('{UBIQUITIN}')"
    ));
    assert!(differ);
    let last_is_minus_one = scalar::<bool>(&format!(
        "SELECT plm_embed('{UBIQUITIN}', layer => -1) = plm_embed('{UBIQUITIN}')"
    ));
    assert!(last_is_minus_one);
}

#[pg_test]
fn batch_form_equals_single_calls() {
    let ok = scalar::<bool>(&format!(
        "WITH b AS (SELECT * FROM plm_embed(ARRAY['{UBIQUITIN}', NULL, 'MKTAYIAKQR']))
         SELECT count(*) = 3
            AND bool_and(CASE ordinality
                WHEN 1 THEN (SELECT max(abs(a - c)) FROM unnest(embedding, plm_embed('{UBIQUITIN}')) AS t(a, c)) < 1e-5
                WHEN 2 THEN embedding IS NULL
                ELSE (SELECT max(abs(a - c)) FROM unnest(embedding, plm_embed('MKTAYIAKQR')) AS t(a, c)) < 1e-5 END)
         FROM b"
    ));
    assert!(ok);
}

#[pg_test]
fn residues_are_two_dimensional_and_multiscale() {
    let dims = scalar::<String>(&format!("SELECT array_dims(plm_embed_residues('{UBIQUITIN}'))"));
    let dim = scalar::<i32>("SELECT embedding_dim FROM plm_models() WHERE name = 'plm-default'");
    assert_eq!(dims, format!("[1:76][1:{dim}]"));
    let dims = scalar::<String>(&format!(
        "SELECT array_dims(plm_embed_residues('{UBIQUITIN}', layers => ARRAY[0, 2, -1]))"
    ));
    assert_eq!(dims, format!("[1:76][1:{}]", 3 * dim));
}

#[pg_test]
fn contacts_are_upper_triangle_probabilities() {
    let ok = scalar::<bool>(&format!(
        "SELECT bool_and(i < j AND i >= 1 AND j <= 76 AND probability BETWEEN 0 AND 1)
         FROM plm_contacts('{UBIQUITIN}', 0.0)"
    ));
    assert!(ok);
    let n = scalar::<i64>(&format!("SELECT count(*) FROM plm_contacts('{UBIQUITIN}', 0.0)"));
    assert_eq!(n, 76 * 75 / 2);
}

#[pg_test]
fn nulls_give_nulls() {
    assert!(Spi::get_one::<Vec<f32>>("SELECT plm_embed(NULL::text)").unwrap().is_none());
    let n = scalar::<i64>("SELECT count(*) FROM plm_contacts(NULL)");
    assert_eq!(n, 0);
}

#[pg_test]
fn bad_input_raises_clear_errors() {
    let e = error_of("SELECT plm_embed('MK1T')");
    assert!(e.starts_with("22023: ") && e.contains("'1' at position 3"), "{e}");
    let e = error_of("SELECT plm_embed('   ')");
    assert!(e.starts_with("22023: ") && e.contains("empty"), "{e}");
    let e = error_of("SELECT plm_embed('MKT', pooling => 'sum')");
    assert!(e.starts_with("22023: ") && e.contains("mean, cls, max"), "{e}");
    let e = error_of("SELECT plm_embed('MKT', layer => 99)");
    assert!(e.starts_with("22023: ") && e.contains("out of range"), "{e}");
    let e = error_of("SELECT plm_embed('MKT', model => 'nope')");
    assert!(e.starts_with("42704: ") && e.contains("plm-default"), "{e}");
    let e = error_of("SELECT plm_embed('MKT', model => '../etc')");
    assert!(e.starts_with("42704: "), "{e}");
    let e = error_of("SELECT plm_embed(repeat('A', 2000))");
    assert!(e.starts_with("22023: ") && e.contains("exceeds the model limit"), "{e}");
    // The backend stays usable after errors.
    let len = scalar::<i32>("SELECT array_length(plm_embed('MKT'), 1)");
    assert!(len > 0);
}

#[pg_test]
fn long_sequences_can_be_windowed() {
    // 1,064 residues: over plm-default's own limit of 1,022.
    let long = format!("repeat('{UBIQUITIN}', 14)");
    let e = error_of(&format!("SELECT plm_embed({long})"));
    assert!(e.starts_with("22023: ") && e.contains("exceeds the model limit"), "{e}");
    Spi::run("SET plm.long_sequence_policy = 'window'").unwrap();
    let rows = scalar::<String>(&format!("SELECT array_dims(plm_embed_residues({long}))"));
    assert!(rows.starts_with("[1:1064]"), "{rows}");
    // plm.max_length refuses, under either policy, and never changes a value.
    Spi::run("SET plm.max_length = 1000").unwrap();
    let e = error_of(&format!("SELECT plm_embed({long})"));
    assert!(e.starts_with("22023: ") && e.contains("accepted maximum of 1000"), "{e}");
    Spi::run("RESET plm.max_length").unwrap();
    Spi::run("RESET plm.long_sequence_policy").unwrap();
}

#[pg_test]
fn session_settings_never_change_a_value() {
    // Every function under every combination of the session settings that may decide
    // whether a call is accepted: the value is the same or the call is an error.
    let calls = [
        format!("plm_embed('{UBIQUITIN}')::text"),
        format!("plm_embed('{UBIQUITIN}', 'plm-default', 1, 'max')::text"),
        format!("plm_embed_residues(repeat('{UBIQUITIN}', 14), layers => ARRAY[1, -1])::text"),
        format!("(SELECT coalesce(array_agg(c.*)::text, 'none') FROM plm_contacts('{UBIQUITIN}', 0.3) c)"),
        format!("(SELECT coalesce(array_agg(f.*)::text, 'none') FROM plm_function('{UBIQUITIN}', 'go_mf', 3) f)"),
        format!("plm_ppi('{UBIQUITIN}', 'MKTAYIAKQRQISFVKSHFSRQ')::text"),
        format!("(SELECT coalesce(array_agg(b.*)::text, 'none') FROM plm_binding_sites('{UBIQUITIN}', 'ZN', 0.1) b)"),
    ];
    let combos = [
        ("error", 100_000, 8192),
        ("window", 100_000, 8192),
        ("window", 1500, 64),
        ("error", 1022, 300),
        ("window", 50, 8192),
    ];
    for call in &calls {
        let mut seen: Option<String> = None;
        for (policy, max_length, tokens) in combos {
            Spi::run(&format!(
                "SET plm.long_sequence_policy = '{policy}'; SET plm.max_length = {max_length}; \
                 SET plm.max_tokens_per_batch = {tokens}; SET plm.use_worker = off"
            ))
            .unwrap();
            for worker in [false, true] {
                if worker {
                    Spi::run("SET plm.use_worker = on").unwrap();
                }
                let value = error_of(&format!("SELECT {call}"));
                let value = if value == "no error" {
                    Some(scalar::<String>(&format!("SELECT {call}")))
                } else {
                    assert!(value.starts_with("22023: "), "{call}: {value}");
                    None
                };
                if let (Some(v), Some(before)) = (&value, &seen) {
                    assert_eq!(v, before, "{call} changed under {policy}/{max_length}/{tokens}");
                }
                seen = seen.or(value);
            }
        }
        assert!(seen.is_some(), "{call} never answered");
    }
    Spi::run("RESET plm.long_sequence_policy; RESET plm.max_length; RESET plm.max_tokens_per_batch; RESET plm.use_worker").unwrap();
}

#[pg_test]
fn settings_are_typed_and_the_prefix_is_reserved() {
    let e = error_of("SET plm.long_sequence_policy = 'windows'");
    assert!(e.starts_with("22023: ") && e.contains("windows"), "{e}");
    let e = error_of("SET plm.worker_fallback = 'maybe'");
    assert!(e.starts_with("22023: "), "{e}");
    let e = error_of("SET plm.device = 'gpu'");
    assert!(e.starts_with("22023: ") && e.contains("plm.device"), "{e}");
    let e = error_of("SET plm.device = 'cuda:0'");
    assert!(e.starts_with("22023: "), "{e}"); // no CUDA in this build
    let e = error_of("SET plm.devise = 'cpu'");
    assert!(e.starts_with("42602: ") && e.contains("plm.devise"), "{e}");
    let e = error_of("SET plm.max_request_mb = 10");
    assert!(e.starts_with("55P02: "), "{e}"); // only in the server's configuration
    let e = error_of("SET plm.server_path = '/bin/sh'");
    assert!(e.starts_with("55P02: "), "{e}");
}

#[pg_test]
fn cache_counts_hits() {
    Spi::run("SELECT plm_cache_clear()").unwrap();
    let before = scalar::<i64>("SELECT hits FROM plm_cache_stats()");
    Spi::run("SELECT plm_embed('MKTAYIAKQRQISFVKSHFSRQ')").unwrap();
    Spi::run("SELECT plm_embed('MKTAYIAKQRQISFVKSHFSRQ')").unwrap();
    let after = scalar::<i64>("SELECT hits FROM plm_cache_stats()");
    assert!(after > before);
    assert!(scalar::<i64>("SELECT bytes FROM plm_cache_stats()") > 0);
}

#[pg_test]
fn operator_functions_answer() {
    assert!(scalar::<String>("SELECT plm_version()").starts_with("pg_plm "));
    let fp = scalar::<String>("SELECT fingerprint FROM plm_models() WHERE name = 'plm-default'");
    assert_eq!(fp.len(), 64);
}

#[pg_test]
fn settings_touching_files_are_superuser_only() {
    Spi::run("CREATE ROLE plm_tester NOSUPERUSER").unwrap();
    Spi::run("SET ROLE plm_tester").unwrap();
    let e = error_of("SET plm.model_dir = '/tmp'");
    assert!(e.starts_with("42501: "), "{e}");
    let e = error_of("SET plm.device = 'cuda'");
    assert!(e.starts_with("42501: "), "{e}");
    let e = error_of("SET plm.use_worker = off");
    assert!(e.starts_with("42501: "), "{e}");
    let e = error_of("SET plm.default_model = 'x'");
    assert!(e.starts_with("42501: "), "{e}");
    // The server executable's path is not even readable by ordinary roles.
    let e = error_of("SHOW plm.server_path");
    assert!(e.starts_with("42501: "), "{e}");
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn changed_weights_under_the_same_name_are_refused() {
    let (dir, model) = bare_copy_of_default("fingerprint", "fp-model");
    Spi::run(&format!("SET plm.model_dir = '{}'", dir.display())).unwrap();
    Spi::run("SELECT plm_embed('MKTAYIAKQR', model => 'fp-model')").unwrap();
    // Different weights under the same name: flip one bit of the last weight.
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, &bytes).unwrap();
    let e = error_of("SELECT plm_embed('MKTAYIAKQR', model => 'fp-model')");
    assert!(e.starts_with("XX001: ") && e.contains("changed on disk"), "{e}");
    Spi::run("RESET plm.model_dir").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real PDB text for the first `n` residues of ubiquitin: an ideal α-helix-free trace is not
/// needed, only coordinates, so residues are placed on a 3.8 Å zig-zag.
fn ubiquitin_pdb(n: usize) -> String {
    let three = |c: char| match c {
        'A' => "ALA", 'R' => "ARG", 'N' => "ASN", 'D' => "ASP", 'C' => "CYS", 'Q' => "GLN",
        'E' => "GLU", 'G' => "GLY", 'H' => "HIS", 'I' => "ILE", 'L' => "LEU", 'K' => "LYS",
        'M' => "MET", 'F' => "PHE", 'P' => "PRO", 'S' => "SER", 'T' => "THR", 'W' => "TRP",
        'Y' => "TYR", _ => "VAL",
    };
    let mut s = String::new();
    for (i, c) in UBIQUITIN.chars().take(n).enumerate() {
        let (x, y) = (3.8 * i as f64, if i % 2 == 0 { 0.0 } else { 1.0 });
        s += &format!(
            "ATOM  {:>5}  CA  {} A{:>4}    {:>8.3}{:>8.3}{:>8.3}  1.00 20.00           C\n",
            i + 1,
            three(c),
            i + 1,
            x,
            y,
            0.0
        );
    }
    s + "END\n"
}

#[pg_test]
fn function_terms_are_ranked_scores() {
    // The shipped model answers EC by nearest-neighbour transfer (only terms of the nearest
    // training enzyme have support) and GO by its MLP heads.
    let ec: i64 = scalar(&format!(
        "SELECT count(*) FROM plm_function('{UBIQUITIN}', 'ec', top_k => 3)
          WHERE term ~ '^[0-9]+\\.[0-9n-]+\\.[0-9n-]+\\.[0-9n-]+$' AND score > 0 AND score <= 1"
    ));
    assert!((1..=3).contains(&ec), "{ec} EC rows");
    let rows: i64 = scalar(&format!(
        "SELECT count(*) FROM plm_function('{UBIQUITIN}', 'go_mf', top_k => 10)"
    ));
    assert_eq!(rows, 10);
    let ordered: bool = scalar(&format!(
        "SELECT bool_and(score <= prev) FROM (SELECT score, lag(score, 1, 1.0::real) OVER () AS prev
           FROM plm_function('{UBIQUITIN}', 'go_mf', top_k => 10)) s"
    ));
    assert!(ordered);
    let named: bool = scalar(&format!(
        "SELECT bool_and(term LIKE 'GO:%' AND name <> '' AND score BETWEEN 0 AND 1)
           FROM plm_function('{UBIQUITIN}', 'go_bp', top_k => 5)"
    ));
    assert!(named);
    // min_score filters, and the best term passes any threshold at or below its score.
    let best: f32 = scalar(&format!(
        "SELECT max(score) FROM plm_function('{UBIQUITIN}', 'go_cc')"
    ));
    let above: i64 = scalar(&format!(
        "SELECT count(*) FROM plm_function('{UBIQUITIN}', 'go_cc', top_k => 100, min_score => {best})"
    ));
    assert!(above >= 1);
}

#[pg_test]
fn interaction_is_symmetric_probability() {
    let a = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ";
    let same: bool = scalar(&format!(
        "SELECT plm_ppi('{a}', '{UBIQUITIN}') = plm_ppi('{UBIQUITIN}', '{a}')"
    ));
    assert!(same);
    let p: f32 = scalar(&format!("SELECT plm_ppi('{a}', '{UBIQUITIN}')"));
    assert!((0.0..=1.0).contains(&p));
}

#[pg_test]
fn binding_sites_cover_every_residue_at_threshold_zero() {
    let n = UBIQUITIN.len() as i64;
    let all: i64 = scalar(&format!(
        "SELECT count(*) FROM plm_binding_sites('{UBIQUITIN}', threshold => 0)"
    ));
    assert_eq!(all, n * 11);
    let zinc: i64 = scalar(&format!(
        "SELECT count(*) FROM plm_binding_sites('{UBIQUITIN}', 'zn', threshold => 0)"
    ));
    assert_eq!(zinc, n);
    let residue_matches: bool = scalar(&format!(
        "SELECT bool_and(residue = substr('{UBIQUITIN}', position, 1))
           FROM plm_binding_sites('{UBIQUITIN}', 'DNA', threshold => 0)"
    ));
    assert!(residue_matches);
}

#[pg_test]
fn binding_sites_use_a_supplied_structure() {
    let pdb = ubiquitin_pdb(UBIQUITIN.len()).replace('\'', "''");
    let with: Vec<f32> = Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT score FROM plm_binding_sites('{UBIQUITIN}', 'PPI', 0, structure => '{pdb}') ORDER BY position"
            ),
            None,
            &[],
        )
        .unwrap()
        .map(|r| r.get::<f32>(1).unwrap().unwrap())
        .collect()
    });
    assert_eq!(with.len(), UBIQUITIN.len());
    // A structure of another protein is refused.
    let other = ubiquitin_pdb(40).replace("LYS", "TRP").replace("GLN", "TRP").replace("ILE", "TRP").replace('\'', "''");
    let e = error_of(&format!(
        "SELECT * FROM plm_binding_sites('{UBIQUITIN}', 'PPI', 0, structure => '{other}')"
    ));
    assert!(e.starts_with("22023: ") && e.contains("does not match the sequence"), "{e}");
}

#[pg_test]
fn task_argument_errors_list_the_valid_values() {
    let e = error_of(&format!("SELECT * FROM plm_function('{UBIQUITIN}', 'kegg')"));
    assert!(e.starts_with("22023: ") && e.contains("ec, go_mf, go_bp, go_cc"), "{e}");
    let e = error_of(&format!("SELECT * FROM plm_binding_sites('{UBIQUITIN}', 'FE')"));
    assert!(e.starts_with("22023: ") && e.contains("DNA, RNA, PEP"), "{e}");
    let e = error_of(&format!("SELECT * FROM plm_function('{UBIQUITIN}', top_k => -1)"));
    assert!(e.starts_with("22023: ") && e.contains("top_k"), "{e}");
    let e = error_of(&format!("SELECT * FROM plm_binding_sites('{UBIQUITIN}', threshold => 2)"));
    assert!(e.starts_with("22023: ") && e.contains("threshold"), "{e}");
    let e = error_of("SELECT * FROM plm_binding_sites('MK1')");
    assert!(e.starts_with("22023: ") && e.contains("invalid residue '1'"), "{e}");
    let e = error_of(&format!("SELECT * FROM plm_binding_sites('{UBIQUITIN}', structure => 'not a structure')"));
    assert!(e.starts_with("22023: "), "{e}");
}

#[pg_test]
fn a_model_without_heads_says_so() {
    let (dir, _model) = bare_copy_of_default("noheads", "bare");
    Spi::run(&format!("SET plm.model_dir = '{}'", dir.display())).unwrap();
    let e = error_of("SELECT * FROM plm_function('MKTAYIAKQR', model => 'bare')");
    assert!(e.starts_with("0A000: ") && e.contains("has no function (ec) head"), "{e}");
    let e = error_of("SELECT plm_ppi('MKTAYIAKQR', 'MKT', model => 'bare')");
    assert!(e.starts_with("0A000: ") && e.contains("interaction"), "{e}");
    let e = error_of("SELECT * FROM plm_binding_sites('MKTAYIAKQR', model => 'bare')");
    assert!(e.starts_with("0A000: ") && e.contains("binding-site"), "{e}");
    Spi::run("RESET plm.model_dir").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[pg_test]
fn forms_with_a_model_are_immutable_and_the_others_stable() {
    let wrong: i64 = scalar(
        "SELECT count(*) FROM pg_proc
         WHERE proname IN ('plm_embed', 'plm_embed_residues', 'plm_residue_embeddings',
                           'plm_contacts', 'plm_function', 'plm_ppi', 'plm_binding_sites')
           AND (provolatile <> CASE WHEN 'model' = ANY(proargnames) THEN 'i' ELSE 's' END
                OR proparallel <> 's' OR procost < 100000)",
    );
    assert_eq!(wrong, 0);
    // Every prediction function has a form that names its model (the workflow functions'
    // `model` argument is a setting of the sync or job, not a form).
    let forms: i64 = scalar(
        "SELECT count(*) FROM pg_proc WHERE proname IN ('plm_embed', 'plm_embed_residues',
             'plm_residue_embeddings', 'plm_contacts', 'plm_function', 'plm_ppi',
             'plm_binding_sites') AND 'model' = ANY(proargnames)",
    );
    assert_eq!(forms, 8);
    // Positional calls keep their meaning: the second argument is the ontology here...
    let n = scalar::<i64>(&format!("SELECT count(*) FROM plm_function('{UBIQUITIN}', 'go_mf', 3)"));
    assert!(n > 0);
    // ...and a NULL model is refused in the forms that name one.
    let e = error_of("SELECT plm_embed('MKT', NULL, 1)");
    assert!(e.starts_with("22004: ") && e.contains("model must not be NULL"), "{e}");
}

#[pg_test]
fn without_preloading_inference_still_runs_in_an_isolated_server() {
    // The test server does not preload pg_plm: the first call started the supervisor as a
    // dynamic background worker, and the server process answers.
    assert_eq!(
        scalar::<i32>("SELECT array_length(plm_embed('MKTAYIAKQR'), 1)"),
        scalar::<i32>("SELECT embedding_dim FROM plm_models() WHERE name = 'plm-default'")
    );
    assert_eq!(scalar::<String>("SELECT state FROM plm_worker_stats()"), "running");
    let server_pid = scalar::<i32>("SELECT pid FROM plm_worker_stats()");
    let backend_pid = scalar::<i32>("SELECT pg_backend_pid()");
    assert_ne!(server_pid, backend_pid);
    // The server is not a PostgreSQL process.
    let listed: i64 = scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {server_pid}"
    ));
    assert_eq!(listed, 0);
    let supervisor = scalar::<i32>("SELECT supervisor_pid FROM plm_worker_stats()");
    assert!(supervisor > 0 && supervisor != server_pid);
    assert!(scalar::<bool>(
        "SELECT loaded FROM plm_models() WHERE name = 'plm-default'"
    ));
}
