//! Residues per second of the engine on a checkpoint directory, for side-by-side runs with
//! `scripts/bench_reference.py` (same weights, same sequences, same thread count).
//!
//! ```text
//! cargo run --release --example throughput -p plm-model -- DIR BATCH LENGTH [REPEATS] [THREADS]
//! cargo run --release --example throughput -p plm-model -- DIR --stream COUNT LENGTH [BATCH]
//! ```
//!
//! The first form times `REPEATS` calls of `Engine::embed` on one batch (after a warm-up) and
//! prints the median call as residues/s. The second embeds `COUNT` distinct sequences in calls
//! of `BATCH` (default 32), with the cache off, and prints the resident set size as it goes:
//! memory should stay flat.

use std::sync::Arc;
use std::time::Instant;

use plm_model::{EmbeddingCache, Engine, EngineOptions, LoadOptions, Pooling};

fn sequence(len: usize, seed: usize) -> String {
    const AA: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";
    (0..len)
        .map(|i| AA[(i * 7 + seed * 13 + i / 3 + (seed / 20) * (i % 5)) % 20] as char)
        .collect()
}

/// `VmRSS` and `VmHWM` of this process in MiB (Linux), or zeros.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn load(
    dir: &str,
    max_tokens: usize,
    threads: usize,
) -> Result<Engine, Box<dyn std::error::Error>> {
    let options = EngineOptions {
        max_tokens_per_batch: max_tokens,
        ..Default::default()
    };
    Ok(Engine::load(
        dir,
        LoadOptions {
            threads,
            ..LoadOptions::default()
        },
        options,
        Arc::new(EmbeddingCache::new(0)),
    )?)
}

fn stream(
    dir: &str,
    count: usize,
    len: usize,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = load(dir, batch * (len + 2), 0)?;
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let seqs: Vec<String> = (done..done + n).map(|s| sequence(len, s)).collect();
        let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
        let out = engine.embed(&refs, None, Pooling::Mean)?;
        assert_eq!(out.len(), n);
        done += n;
        if done % (batch * 50) == 0 || done == count {
            let (rss, hwm) = rss_mib();
            println!(
                "{{\"sequences\": {done}, \"rss_mib\": {rss:.1}, \"peak_rss_mib\": {hwm:.1}, \"residues_per_s\": {:.1}}}",
                (done * len) as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() >= 5 && args[2] == "--stream" {
        let batch = args.get(5).map(|b| b.parse()).transpose()?.unwrap_or(32);
        return stream(&args[1], args[3].parse()?, args[4].parse()?, batch);
    }
    if args.len() < 4 {
        return Err("usage: throughput DIR BATCH LENGTH [REPEATS] [THREADS] | DIR --stream COUNT LENGTH [BATCH]".into());
    }
    let (batch, len): (usize, usize) = (args[2].parse()?, args[3].parse()?);
    let repeats: usize = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let threads: usize = args.get(5).map(|r| r.parse()).transpose()?.unwrap_or(0);
    let engine = load(&args[1], batch * (len + 2), threads)?;
    let seqs: Vec<String> = (0..batch).map(|s| sequence(len, s)).collect();
    let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    engine.embed(&refs, None, Pooling::Mean)?; // warm-up
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        engine.embed(&refs, None, Pooling::Mean)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (_, hwm) = rss_mib();
    println!(
        "{{\"impl\": \"plm-model\", \"batch\": {batch}, \"length\": {len}, \"residues_per_s\": {:.1}, \"best_residues_per_s\": {:.1}, \"peak_rss_mib\": {hwm:.1}}}",
        (batch * len) as f64 / median,
        (batch * len) as f64 / times[0]
    );
    Ok(())
}
