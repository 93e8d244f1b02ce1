//! Residues per second of the engine on a checkpoint directory, for side-by-side runs with
//! `scripts/bench_reference.py` (same weights, same sequences, same thread count).
//!
//! `cargo run --example throughput -p plm-model -- DIR BATCH LENGTH [REPEATS]`

use std::sync::Arc;
use std::time::Instant;

use candle_core::DType;
use plm_model::{DeviceSpec, EmbeddingCache, Engine, EngineOptions, Pooling};

fn sequence(len: usize, seed: usize) -> String {
    const AA: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";
    (0..len)
        .map(|i| AA[(i * 7 + seed * 13 + i / 3) % 20] as char)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: throughput DIR BATCH LENGTH [REPEATS]".into());
    }
    let (batch, len): (usize, usize) = (args[2].parse()?, args[3].parse()?);
    let repeats: usize = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let options = EngineOptions {
        max_tokens_per_batch: batch * (len + 2),
        ..Default::default()
    };
    let engine = Engine::load(
        &args[1],
        DeviceSpec::Cpu,
        DType::F32,
        options,
        Arc::new(EmbeddingCache::new(0)),
    )?;
    let seqs: Vec<String> = (0..batch).map(|s| sequence(len, s)).collect();
    let refs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    engine.embed(&refs, None, Pooling::Mean)?; // warm-up
    let start = Instant::now();
    for _ in 0..repeats {
        engine.embed(&refs, None, Pooling::Mean)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"impl\": \"plm-model\", \"batch\": {batch}, \"length\": {len}, \"residues_per_s\": {:.1}}}",
        (batch * len * repeats) as f64 / secs
    );
    Ok(())
}
