//! Helpers shared by the integration tests: a deterministic sequence generator and an
//! independent, deliberately naive Smith–Waterman–Gotoh.

#![allow(dead_code)]

use plm_align::matrix::BLOSUM62;

pub const STANDARD: &[u8; 20] = b"ARNDCQEGHILKMFPSTWYV";

/// Small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn protein(&mut self, len: usize) -> String {
        (0..len).map(|_| STANDARD[self.below(20)] as char).collect()
    }
    /// A copy of `s` with about `rate` substitutions per residue and a few short indels.
    pub fn mutate(&mut self, s: &str, rate: f64) -> String {
        let mut out = String::new();
        for c in s.chars() {
            let r = (self.next() % 10_000) as f64 / 10_000.0;
            if r < rate {
                out.push(STANDARD[self.below(20)] as char);
            } else if r < rate * 1.05 {
                // deletion
            } else if r < rate * 1.1 {
                out.push(c);
                out.push(STANDARD[self.below(20)] as char);
            } else {
                out.push(c);
            }
        }
        if out.is_empty() {
            out.push('A');
        }
        out
    }
}

fn code(c: u8) -> usize {
    b"ARNDCQEGHILKMFPSTWYVBZX"
        .iter()
        .position(|&x| x == c)
        .unwrap_or(22)
}

/// Textbook Gotoh local alignment with three full matrices; gap of length L costs 11 + L.
pub fn naive_sw(q: &str, t: &str) -> i32 {
    let (q, t) = (q.as_bytes(), t.as_bytes());
    let (n, m) = (q.len(), t.len());
    let neg = -1_000_000;
    let mut h = vec![vec![0i32; m + 1]; n + 1];
    let mut e = vec![vec![neg; m + 1]; n + 1];
    let mut f = vec![vec![neg; m + 1]; n + 1];
    let mut best = 0;
    for i in 1..=n {
        for j in 1..=m {
            e[i][j] = (e[i][j - 1] - 1).max(h[i][j - 1] - 12);
            f[i][j] = (f[i - 1][j] - 1).max(h[i - 1][j] - 12);
            let s = BLOSUM62[code(q[i - 1])][code(t[j - 1])] as i32;
            h[i][j] = 0.max(h[i - 1][j - 1] + s).max(e[i][j]).max(f[i][j]);
            best = best.max(h[i][j]);
        }
    }
    best
}

/// `../shared/data/<rel>` when present; prints a skip message otherwise.
pub fn shared_data(rel: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../shared/data")
    .join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (the shared data directory is absent)",
            path.display()
        );
        None
    }
}

/// `(id, sequence)` rows of a TSV with a header, sequence in the last column.
pub fn read_tsv(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Some((cols.first()?.to_string(), cols.last()?.to_string()))
        })
        .collect()
}
