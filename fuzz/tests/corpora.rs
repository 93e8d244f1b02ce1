//! Replays the committed fuzz corpora (`fuzz/corpus/<target>`) and every input that once
//! crashed a target (`fuzz/regressions/<target>`) through the same target functions the afl
//! binaries run: each must finish without a panic or a failed property.

use std::path::Path;

use plm_fuzz::{Checkpoints, TARGETS};

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, minimum: usize) {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join(kind);
    let checkpoints = Checkpoints::new().expect("seed checkpoint");
    for target in TARGETS {
        let files = inputs(&root.join(target));
        assert!(
            files.len() >= minimum,
            "{kind}/{target} has {} inputs; run scripts/fuzz.sh to rebuild it",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| plm_fuzz::run(target, &data, &checkpoints));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
    }
}

#[test]
fn corpora_replay_cleanly() {
    replay("corpus", 1);
}

#[test]
fn past_crashes_stay_fixed() {
    replay("regressions", 0);
}
