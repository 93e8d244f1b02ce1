//! Exact k-mer index over the standard residues of a concatenated reference.
//!
//! Words are base-20 numbers of `k` standard residue codes; windows containing B, Z or X are
//! not indexed. Postings are global residue positions (offset in the concatenation), sorted.

use crate::alphabet::STANDARD;
use crate::matrix::BLOSUM62;

/// Smallest and largest supported word length.
pub const K_RANGE: std::ops::RangeInclusive<usize> = 2..=5;

/// Inverted index from k-mer words to the global positions where they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmerIndex {
    pub(crate) k: usize,
    /// `offsets[w]..offsets[w + 1]` is the slice of `positions` for word `w`.
    pub(crate) offsets: Vec<u32>,
    pub(crate) positions: Vec<u32>,
}

/// Number of distinct words of length `k`.
pub fn word_count(k: usize) -> usize {
    STANDARD.pow(k as u32)
}

/// Word of `k` codes, `None` if one is not a standard residue.
#[inline]
pub fn word(codes: &[u8]) -> Option<usize> {
    codes.iter().try_fold(0usize, |w, &c| {
        ((c as usize) < STANDARD).then(|| w * STANDARD + c as usize)
    })
}

impl KmerIndex {
    /// Indexes every window of `k` residues that lies inside one sequence; `starts` holds the
    /// first global position of each sequence followed by the total length.
    pub fn build(residues: &[u8], starts: &[u32], k: usize) -> Self {
        let words = word_count(k);
        let mut counts = vec![0u32; words + 1];
        let each_word = |f: &mut dyn FnMut(usize, u32)| {
            for bounds in starts.windows(2) {
                let (s, e) = (bounds[0] as usize, bounds[1] as usize);
                if e - s < k {
                    continue;
                }
                for p in s..=e - k {
                    if let Some(w) = word(&residues[p..p + k]) {
                        f(w, p as u32);
                    }
                }
            }
        };
        each_word(&mut |w, _| counts[w + 1] += 1);
        for w in 0..words {
            counts[w + 1] += counts[w];
        }
        let offsets = counts.clone();
        let mut fill = counts;
        let mut positions = vec![0u32; offsets[words] as usize];
        each_word(&mut |w, p| {
            positions[fill[w] as usize] = p;
            fill[w] += 1;
        });
        KmerIndex {
            k,
            offsets,
            positions,
        }
    }

    /// Word length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Global start positions of `word` (empty for an out-of-range word).
    #[inline]
    pub fn postings(&self, word: usize) -> &[u32] {
        match (self.offsets.get(word), self.offsets.get(word + 1)) {
            (Some(&a), Some(&b)) => self.positions.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Appends to `out` every word scoring at least `threshold` against `codes` (BLOSUM62 summed
/// over the positions); `codes` must be standard residues. The word itself is always included.
pub fn neighbourhood(codes: &[u8], threshold: i32, out: &mut Vec<usize>) {
    // Best score still reachable from each suffix.
    let mut best_rest = vec![0i32; codes.len() + 1];
    for p in (0..codes.len()).rev() {
        let row = &BLOSUM62[codes[p] as usize][..STANDARD];
        best_rest[p] = best_rest[p + 1] + row.iter().copied().max().unwrap_or(0) as i32;
    }
    let own = word(codes);
    if let Some(w) = own {
        out.push(w);
    }
    if best_rest[0] < threshold {
        return;
    }
    Walk {
        codes,
        best_rest: &best_rest,
        threshold,
        own,
        out,
    }
    .step(0, 0, 0);
}

/// Depth-first enumeration of the words of a neighbourhood, pruned by the best reachable score.
struct Walk<'a> {
    codes: &'a [u8],
    best_rest: &'a [i32],
    threshold: i32,
    own: Option<usize>,
    out: &'a mut Vec<usize>,
}

impl Walk<'_> {
    fn step(&mut self, p: usize, acc: i32, w: usize) {
        if p == self.codes.len() {
            if Some(w) != self.own {
                self.out.push(w);
            }
            return;
        }
        let row = &BLOSUM62[self.codes[p] as usize];
        for (c, &s) in row.iter().enumerate().take(STANDARD) {
            let acc = acc + s as i32;
            if acc + self.best_rest[p + 1] >= self.threshold {
                self.step(p + 1, acc, w * STANDARD + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alphabet::encode;

    #[test]
    fn postings_list_every_window_inside_sequences() {
        let a = encode("ACDAC").unwrap_or_default();
        let b = encode("CDAXACD").unwrap_or_default();
        let residues = [a.clone(), b.clone()].concat();
        let starts = [0, 5, 12];
        let idx = KmerIndex::build(&residues, &starts, 3);
        let acd = word(&encode("ACD").unwrap_or_default()).unwrap_or(0);
        assert_eq!(idx.postings(acd), &[0, 9]);
        let cda = word(&encode("CDA").unwrap_or_default()).unwrap_or(0);
        assert_eq!(idx.postings(cda), &[1, 5]);
        // "ACC" spans the boundary between the sequences and is not indexed.
        let acc = word(&encode("ACC").unwrap_or_default()).unwrap_or(0);
        assert!(idx.postings(acc).is_empty());
        assert_eq!(idx.positions.len(), 3 + 2);
    }

    #[test]
    fn neighbourhood_matches_brute_force() {
        let codes = encode("WCH").unwrap_or_default();
        for t in [11, 13, 20, 100] {
            let mut got = Vec::new();
            neighbourhood(&codes, t, &mut got);
            got.sort_unstable();
            let mut want: Vec<usize> = (0..word_count(3))
                .filter(|&w| {
                    let ws = [w / 400, (w / 20) % 20, w % 20];
                    let s: i32 = ws
                        .iter()
                        .zip(&codes)
                        .map(|(&a, &b)| BLOSUM62[a][b as usize] as i32)
                        .sum();
                    s >= t || Some(w) == word(&codes)
                })
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "threshold {t}");
        }
    }
}
