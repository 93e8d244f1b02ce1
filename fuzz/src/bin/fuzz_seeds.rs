//! Writes the starting corpus of every fuzz target into `fuzz/corpus/<target>` (existing files
//! are kept): valid inputs of each format, so the fuzzer starts from deep inside the parsers.
//!
//! `cargo run -p plm-fuzz --bin fuzz_seeds -- [SHARED_DATA_DIR]` (default `../shared/data`,
//! where the structure seeds come from).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plm_serve::protocol;
use plm_serve::{ModelRef, Request};

fn main() -> Result<()> {
    let data = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"));
    let corpus = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("corpus");
    let mut written = 0;
    let mut put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("seed-{name}"));
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| path.display().to_string())?;
            written += 1;
        }
        Ok(())
    };

    for (name, s) in [
        ("plain", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"),
        ("lower-spaces", "mktay iakqr\nqisfv\tkshf"),
        (
            "fasta",
            ">sp|P69905|HBA_HUMAN\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF\n",
        ),
        ("rare", "ACDEFGHIKLMNPQRSTVWYXBZUO"),
        ("unicode", "MKT\u{e9}\u{2013}AY*"),
        ("digits", "12MKT-AY."),
    ] {
        put("sequence", name, s.as_bytes())?;
    }

    let structures = data.join("structures");
    for file in ["1znf.pdb", "1ard.pdb"] {
        let text = std::fs::read_to_string(structures.join(file))
            .with_context(|| format!("{} (pass the shared data directory)", file))?;
        put(
            "structure",
            file,
            format!("YKCGLCERSFVEKSALSRHQRVHKN\n{text}").as_bytes(),
        )?;
        put(
            "structure",
            &format!("chain-{file}"),
            format!("chain=A\n{text}").as_bytes(),
        )?;
    }
    // The mmCIF seed: the header and the first 120 atoms of the large 6YFY entry.
    let cif = std::fs::read_to_string(structures.join("mmcif_6yfy.cif"))?;
    let mut atoms = 0;
    let excerpt: Vec<&str> = cif
        .lines()
        .take_while(|l| {
            atoms += usize::from(l.starts_with("ATOM"));
            atoms <= 120
        })
        .collect();
    put(
        "structure",
        "6yfy.cif",
        format!("\n{}\n", excerpt.join("\n")).as_bytes(),
    )?;

    let checkpoints = plm_fuzz::Checkpoints::new()?;
    for (i, (name, bytes)) in checkpoints.seed_files().iter().enumerate() {
        let mut input = vec![i as u8];
        input.extend_from_slice(bytes);
        put("checkpoint", name, &input)?;
        // A truncated copy of each file as well.
        input.truncate(1 + bytes.len() / 2);
        put("checkpoint", &format!("half-{name}"), &input)?;
    }

    for (i, task) in plm_fuzz::every_task().into_iter().enumerate() {
        let request = Request::Compute {
            model: ModelRef {
                dir: "/nonexistent".into(),
                name: "m".into(),
                device: plm_model::DeviceSpec::Cpu,
            },
            settings: plm_fuzz::SAMPLE_SETTINGS,
            task,
        };
        let mut frame = Vec::new();
        protocol::send(&mut frame, &request)?;
        put("protocol", &format!("request-{i}"), &frame)?;
    }
    let mut frame = Vec::new();
    protocol::send(&mut frame, &Request::Stats)?;
    put("protocol", "stats", &frame)?;
    put(
        "protocol",
        "hello",
        &protocol::encode(&protocol::Hello::current())?,
    )?;

    let targets = [
        "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ",
        "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV",
        "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADAL",
        "GSHMSLFDFFKNKGSAATATDRLKLHLLVEEGQSLMMGEQGGLTADMTLHWLRSGMSLAEAVRRLLIEEG",
    ];
    let text = format!(
        "\u{1}MKTAYIAKQRQISFVKSHFSRQLEERLG\n{}\n",
        targets.join("\n")
    );
    put("align", "text", text.as_bytes())?;
    let reference = plm_align::Reference::build(
        targets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("t{i}"), *s)),
    )?;
    let mut stored = vec![0u8];
    stored.extend(reference.to_bytes()?);
    put("align", "stored", &stored)?;

    // A small labelled reference-set file, as models/reference holds.
    let set = plm_model::homology::FunctionReference::build(
        "go_mf",
        "fuzz seed",
        vec!["GO:1".into(), "GO:2".into()],
        vec!["one".into(), "two".into()],
        targets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("P{i}"), s.to_string(), vec![0, (i % 2) as u32]))
            .collect(),
    )?;
    let path = std::env::temp_dir().join(format!("fuzz-seed-{}.plmref", std::process::id()));
    let file_bytes = |selector: u8| -> Result<Vec<u8>> {
        let mut file = vec![selector];
        file.extend(std::fs::read(&path)?);
        std::fs::remove_file(&path)?;
        Ok(file)
    };
    set.save(&path)?;
    put("align", "reference-set", &file_bytes(1)?)?;
    let proteins: Vec<(String, String)> = targets
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("P{i}"), s.to_string()))
        .collect();
    let pairs: Vec<(u32, u32)> = (1..proteins.len() as u32).map(|i| (i - 1, i)).collect();
    plm_model::homology::InteractionReference::build("fuzz seed", &proteins, &pairs)?
        .save(&path)?;
    put("align", "interaction-set", &file_bytes(2)?)?;
    plm_model::homology::BindingReference::build(
        "fuzz seed",
        vec!["ZN".into(), "PPI".into()],
        proteins
            .into_iter()
            .enumerate()
            .map(|(i, (id, s))| (id, s, vec![((i % 2) as u16, vec![0, 2])]))
            .collect(),
    )?
    .save(&path)?;
    put("align", "binding-set", &file_bytes(3)?)?;

    println!("wrote {written} seed inputs under {}", corpus.display());
    Ok(())
}
