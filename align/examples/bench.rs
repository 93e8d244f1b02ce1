//! Benchmark of `plm-align` against MMseqs2 results on the same queries and reference.
//!
//! ```text
//! bench REFERENCE.tsv QUERIES.tsv MMSEQS.m8 [--queries N] [--evalue E] [--threshold T|none]
//!       [--window W] [--min-ungapped S] [--max-candidates N] [--k K] [--xdrop X]
//! ```
//! TSV files have a header and the sequence in the last column, the identifier in the first.
//! Queries whose identifier is in the reference are skipped. `MMSEQS.m8` is `easy-search`
//! output with columns `query,target,fident,alnlen,qstart,qend,tstart,tend,evalue,bits`.
//! Runs on the calling thread only; prints one `key: value` line per figure.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::time::Instant;

use plm_align::{IndexParams, PrefilterParams, Reference, SearchParams};

/// CPU time of the calling thread in nanoseconds (Linux `schedstat`), if available.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_tsv(path: &str) -> Result<Vec<(String, String)>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((cols.first()?.to_string(), cols.last()?.trim().to_string()))
        })
        .collect())
}

struct MmHit {
    target: String,
    fident: f64,
    evalue: f64,
    bits: f64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: bench REFERENCE.tsv QUERIES.tsv MMSEQS.m8 [options]".into());
    }
    let mut n_queries = 300usize;
    let mut evalue = 1e-3;
    let mut k = 3;
    let mut pre = PrefilterParams::default();
    let mut it = args[4..].iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or("missing option value")?;
        match flag.as_str() {
            "--queries" => n_queries = v.parse()?,
            "--evalue" => evalue = v.parse()?,
            "--k" => k = v.parse()?,
            "--threshold" => {
                pre.neighbour_threshold = if v == "none" { None } else { Some(v.parse()?) }
            }
            "--window" => pre.two_hit_window = v.parse()?,
            "--min-ungapped" => pre.min_ungapped_score = v.parse()?,
            "--max-candidates" => pre.max_candidates = v.parse()?,
            "--stop-after-misses" => pre.stop_after_misses = v.parse()?,
            "--xdrop" => pre.ungapped_xdrop = v.parse()?,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    let entries = read_tsv(&args[1])?;
    let ref_ids: HashSet<String> = entries.iter().map(|e| e.0.clone()).collect();
    let queries: Vec<(String, String)> = read_tsv(&args[2])?
        .into_iter()
        .filter(|q| !ref_ids.contains(&q.0))
        .take(n_queries)
        .collect();

    let t = Instant::now();
    let reference = Reference::build_with(entries, IndexParams { k })?;
    let build_s = t.elapsed().as_secs_f64();
    let bytes = reference.to_bytes()?;
    let t = Instant::now();
    let loaded = Reference::from_bytes(&bytes)?;
    let load_s = t.elapsed().as_secs_f64();
    drop(loaded);

    let mut mm: HashMap<String, Vec<MmHit>> = HashMap::new();
    for line in std::fs::read_to_string(&args[3])?.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        if c.len() < 10 {
            continue;
        }
        let h = MmHit {
            target: c[1].to_string(),
            fident: c[2].parse()?,
            evalue: c[8].parse()?,
            bits: c[9].parse()?,
        };
        if h.evalue <= 1e-3 {
            mm.entry(c[0].to_string()).or_default().push(h);
        }
    }

    let params = SearchParams {
        max_hits: 100_000,
        max_evalue: evalue,
        with_pairs: false,
        prefilter: pre,
    };
    // Warm the per-thread buffers so the first query does not pay for them.
    reference.search(&queries[0].1, &params)?;
    let mut times = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    let cpu0 = thread_cpu_ns();
    for (_, q) in &queries {
        let t = Instant::now();
        let hits = reference.search(q, &params)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        results.push(hits);
    }

    let (mut with_mm, mut top_found, mut all_mm, mut all_found) = (0, 0, 0, 0);
    let (mut top_missed_stat, mut bits_ratio, mut ident_diff, mut compared) = (0, 0.0, 0.0, 0);
    let mut our_total = 0;
    for ((qid, qseq), hits) in queries.iter().zip(&results) {
        our_total += hits.len();
        let ours: HashMap<&str, &plm_align::Hit> =
            hits.iter().map(|h| (h.target_id.as_str(), h)).collect();
        let Some(list) = mm.get(qid) else { continue };
        with_mm += 1;
        let top = list
            .iter()
            .max_by(|a, b| a.bits.total_cmp(&b.bits))
            .ok_or("empty")?;
        match ours.get(top.target.as_str()) {
            Some(h) => {
                top_found += 1;
                bits_ratio += (h.bit_score / top.bits - 1.0).abs();
                ident_diff += (h.identity - top.fident).abs();
                compared += 1;
            }
            None => {
                // Missed: is it the prefilter or the statistics?
                let idx =
                    (0..reference.len()).find(|&i| reference.id(i) == Some(top.target.as_str()));
                let direct = idx.and_then(|i| reference.align_to(qseq, i, false).ok().flatten());
                let e = direct.as_ref().map_or(f64::INFINITY, |h| h.evalue);
                if e > evalue {
                    top_missed_stat += 1;
                }
                eprintln!(
                    "missed top hit {qid} -> {} (mmseqs E {:.1e}, {:.1} bits, fident {:.2}; ours direct E {e:.1e})",
                    top.target, top.evalue, top.bits, top.fident
                );
            }
        }
        all_mm += list.len();
        all_found += list
            .iter()
            .filter(|h| ours.contains_key(h.target.as_str()))
            .count();
    }
    let cpu_ms = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e6 / queries.len() as f64,
        _ => f64::NAN,
    };
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("reference_sequences: {}", reference.len());
    println!("reference_residues: {}", reference.total_residues());
    println!("queries: {}", queries.len());
    println!("queries_with_mmseqs_hit: {with_mm}");
    println!(
        "top_hit_sensitivity: {:.4} ({top_found}/{with_mm})",
        top_found as f64 / with_mm.max(1) as f64
    );
    println!("missed_top_hits_beyond_our_evalue_when_aligned_directly: {top_missed_stat}");
    println!(
        "recall_all_mmseqs_hits: {:.4} ({all_found}/{all_mm})",
        all_found as f64 / all_mm.max(1) as f64
    );
    println!("our_hits_total: {our_total}");
    println!(
        "top_hit_mean_abs_bits_rel_diff: {:.4}",
        bits_ratio / compared.max(1) as f64
    );
    println!(
        "top_hit_mean_abs_identity_diff: {:.4}",
        ident_diff / compared.max(1) as f64
    );
    println!("ms_per_query_mean: {mean:.2}");
    println!("cpu_ms_per_query_mean: {cpu_ms:.2}");
    println!("ms_per_query_median: {:.2}", sorted[sorted.len() / 2]);
    println!("ms_per_query_p95: {:.2}", sorted[sorted.len() * 95 / 100]);
    println!("index_build_s: {build_s:.3}");
    println!("index_load_s: {load_s:.3}");
    println!("index_bytes: {}", bytes.len());
    println!("params: k={k} evalue={evalue} {pre:?}");
    Ok(())
}
