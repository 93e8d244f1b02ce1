//! Residues per second of the engine on a checkpoint directory, for side-by-side runs with
//! `scripts/bench_reference.py` (same weights, same sequences, same thread count).
//!
//! ```text
//! cargo run --release --example throughput -p plm-model -- DIR BATCH LENGTH [REPEATS] [THREADS]
//! cargo run --release --example throughput -p plm-model -- DIR --stream COUNT LENGTH [BATCH]
//! cargo run --release --example throughput -p plm-model -- DIR --file PATH [THREADS] [TOKENS]
//! ```
//!
//! The first form times `REPEATS` calls of `Engine::embed` on one batch (after a warm-up) and
//! prints the median call as residues/s. The second embeds `COUNT` distinct sequences in calls
//! of `BATCH` (default 32), with the cache off, and prints the resident set size as it goes:
//! memory should stay flat.
//!
//! The third embeds the sequences of `PATH` (one per line, or the last tab-separated field:
//! `scripts/fasta_rows.py` output) once, in calls of 256 as `plm_embed_table` makes them,
//! batched under `TOKENS` (default 16384, the inference server's `plm.worker_max_batch_tokens`),
//! cache off, and prints residues/s with the process's CPU use (2.0 = two cores busy): the
//! engine on natural lengths.

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

/// CPU seconds (user + system) this process has used so far (Linux), or 0.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let ticks = fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0);
    ticks / 100.0
}

fn natural(
    path: &str,
    dir: &str,
    threads: usize,
    tokens: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let seqs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.rsplit('\t').next())
        .filter(|s| !s.is_empty())
        .collect();
    let engine = load(dir, tokens, threads)?;
    engine.embed(&seqs[..seqs.len().min(8)], None, Pooling::Mean)?; // warm-up
    let residues: usize = seqs.iter().map(|s| s.len()).sum();
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    for chunk in seqs.chunks(256) {
        engine.embed(chunk, None, Pooling::Mean)?;
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "{{\"impl\": \"plm-model\", \"sequences\": {}, \"residues\": {residues}, \"residues_per_s\": {:.1}, \"sequences_per_s\": {:.2}, \"cpu_per_wall\": {:.2}}}",
        seqs.len(),
        residues as f64 / wall,
        seqs.len() as f64 / wall,
        (cpu_seconds() - cpu0) / wall
    );
    Ok(())
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
    if args.len() >= 4 && args[2] == "--file" {
        let threads = args.get(4).map(|t| t.parse()).transpose()?.unwrap_or(0);
        let tokens = args.get(5).map(|t| t.parse()).transpose()?.unwrap_or(16384);
        return natural(&args[3], &args[1], threads, tokens);
    }
    if args.len() < 4 {
        return Err("usage: throughput DIR BATCH LENGTH [REPEATS] [THREADS] | DIR --stream COUNT LENGTH [BATCH] | DIR --file PATH [THREADS] [TOKENS]".into());
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
