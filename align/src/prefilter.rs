//! Candidate selection: BLAST-style two-hit seeding on the diagonals of the concatenated
//! reference, ungapped X-drop extension, best ungapped score per target.
//!
//! Every query word (exact, plus its BLOSUM62 neighbourhood when a threshold is set) is looked
//! up in the [`KmerIndex`]. A hit at query position `i` and global position `g` lies on the
//! global diagonal `g - i`. A second non-overlapping hit on the same diagonal within
//! `two_hit_window` query positions triggers an ungapped extension; hits inside an extended
//! stretch are skipped. Targets are ranked by their best ungapped segment score.

use crate::index::{neighbourhood, word, KmerIndex};
use crate::matrix::score;

/// Prefilter settings (part of [`crate::SearchParams`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefilterParams {
    /// Neighbourhood threshold `T`: query words also seed with every word scoring at least `T`
    /// against them. `None` seeds with exact words only.
    pub neighbour_threshold: Option<i32>,
    /// Largest distance (query positions) between the two hits of a diagonal.
    pub two_hit_window: usize,
    /// X-drop of the ungapped extension (raw score).
    pub ungapped_xdrop: i32,
    /// Smallest best-ungapped score that makes a target a candidate.
    pub min_ungapped_score: i32,
    /// At most this many candidates (best ungapped scores first) are aligned.
    pub max_candidates: usize,
    /// Candidates are aligned best ungapped score first; stop after this many consecutive
    /// ones fail the E-value cut-off.
    pub stop_after_misses: usize,
}

impl Default for PrefilterParams {
    fn default() -> Self {
        PrefilterParams {
            neighbour_threshold: Some(14),
            two_hit_window: 60,
            ungapped_xdrop: 20,
            min_ungapped_score: 30,
            max_candidates: 1000,
            stop_after_misses: 50,
        }
    }
}

/// Reusable per-thread buffers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Per global diagonal: 0 (untouched), `i + 1` (last hit at query position `i`), or
    /// `EXTENDED | end` (extended up to query position `end`, exclusive).
    diag: Vec<u32>,
    touched: Vec<u32>,
    best: Vec<i32>,
    best_touched: Vec<u32>,
    words: Vec<usize>,
}

const EXTENDED: u32 = 1 << 31;

/// Candidate targets (index, best ungapped score), best first.
pub(crate) fn candidates(
    index: &KmerIndex,
    residues: &[u8],
    starts: &[u32],
    query: &[u8],
    params: &PrefilterParams,
    scratch: &mut Scratch,
) -> Vec<(u32, i32)> {
    let k = index.k;
    let n_targets = starts.len().saturating_sub(1);
    let qlen = query.len();
    if qlen < k || n_targets == 0 || qlen >= EXTENDED as usize {
        return Vec::new();
    }
    let diag_len = residues.len() + qlen + 1;
    if scratch.diag.len() < diag_len {
        scratch.diag.resize(diag_len, 0);
    }
    if scratch.best.len() < n_targets {
        scratch.best.resize(n_targets, 0);
    }
    let Scratch {
        diag,
        touched,
        best,
        best_touched,
        words,
    } = scratch;
    for i in 0..=qlen - k {
        let codes = &query[i..i + k];
        if word(codes).is_none() {
            continue;
        }
        words.clear();
        match params.neighbour_threshold {
            Some(t) => neighbourhood(codes, t, words),
            None => words.extend(word(codes)),
        }
        for &w in words.iter() {
            for &g in index.postings(w) {
                let d = g as usize + qlen - i;
                let v = diag[d];
                let here = i as u32 + 1;
                if v == 0 {
                    diag[d] = here;
                    touched.push(d as u32);
                    continue;
                }
                if v & EXTENDED != 0 {
                    if i as u32 >= v & !EXTENDED {
                        diag[d] = here;
                    }
                    continue;
                }
                let dist = i + 1 - v as usize;
                if dist < k {
                    continue;
                }
                if dist > params.two_hit_window {
                    diag[d] = here;
                    continue;
                }
                let target = starts.partition_point(|&s| s <= g) - 1;
                let (ts, te) = (starts[target] as usize, starts[target + 1] as usize);
                let (s, q_end) = extend(
                    query,
                    &residues[ts..te],
                    i,
                    g as usize - ts,
                    params.ungapped_xdrop,
                );
                diag[d] = EXTENDED | q_end as u32;
                let b = &mut best[target];
                if *b == 0 {
                    best_touched.push(target as u32);
                }
                *b = (*b).max(s);
            }
        }
    }
    let mut out: Vec<(u32, i32)> = best_touched
        .iter()
        .map(|&t| (t, best[t as usize]))
        .filter(|&(_, s)| s >= params.min_ungapped_score)
        .collect();
    out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.truncate(params.max_candidates);
    for &d in touched.iter() {
        diag[d as usize] = 0;
    }
    for &t in best_touched.iter() {
        best[t as usize] = 0;
    }
    touched.clear();
    best_touched.clear();
    out
}

/// Ungapped X-drop extension on the diagonal through query `i` and target `j`, both ways;
/// returns the best segment score (at least 1) and the query end (exclusive) of that segment.
fn extend(query: &[u8], target: &[u8], i: usize, j: usize, xdrop: i32) -> (i32, usize) {
    let (mut run, mut best, mut best_end) = (0, 0, i);
    let mut p = 0;
    while i + p < query.len() && j + p < target.len() {
        run += score(query[i + p], target[j + p]);
        p += 1;
        if run > best {
            best = run;
            best_end = i + p;
        } else if best - run > xdrop {
            break;
        }
    }
    let (mut run, mut left) = (0, 0);
    let mut p = 1;
    while p <= i && p <= j {
        run += score(query[i - p], target[j - p]);
        left = left.max(run);
        if left - run > xdrop {
            break;
        }
        p += 1;
    }
    ((best + left).max(1), best_end.max(i + 1))
}
