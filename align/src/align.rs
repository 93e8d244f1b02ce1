//! Local alignment (Smith–Waterman–Gotoh): the scalar reference implementation, alignment
//! details from a traceback, and the dispatch to the SIMD kernels.
//!
//! Recurrences, with `o = open + extend` (first gap position) and `e = extend`:
//! `E[i][j] = max(E[i][j-1] - e, H[i][j-1] - o)` (gap in the query),
//! `F[i][j] = max(F[i-1][j] - e, H[i-1][j] - o)` (gap in the target),
//! `H[i][j] = max(0, H[i-1][j-1] + s(q_i, t_j), E[i][j], F[i][j])`.
//! The end cell is the first maximum in target-major order (`j` outer, `i` inner, strict `>`),
//! the tie-break the SIMD kernel reproduces.

use crate::matrix::{score, GapCosts};

/// Score and end cell of the best local alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalScore {
    /// Raw score (0 when nothing scores above zero).
    pub score: i32,
    /// 0-based query position of the last aligned residue (0 when `score == 0`).
    pub query_end: usize,
    /// 0-based target position of the last aligned residue (0 when `score == 0`).
    pub target_end: usize,
}

/// A local alignment with its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// Raw score.
    pub score: i32,
    /// First aligned query position (0-based, inclusive).
    pub query_start: usize,
    /// One past the last aligned query position.
    pub query_end: usize,
    /// First aligned target position (0-based, inclusive).
    pub target_start: usize,
    /// One past the last aligned target position.
    pub target_end: usize,
    /// Alignment columns, gaps included.
    pub columns: usize,
    /// Columns with identical residues.
    pub identities: usize,
    /// Aligned residue pairs `(query position, target position)`, in order; gap columns are
    /// not listed.
    pub pairs: Vec<(u32, u32)>,
}

/// One column kind of an alignment path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Query and target residue aligned.
    Pair,
    /// Query residue against a gap.
    QueryOnly,
    /// Target residue against a gap.
    TargetOnly,
}

const NEG: i32 = i32::MIN / 4;

/// Scalar Smith–Waterman–Gotoh score and end cell: the reference twin of the SIMD kernel.
pub fn local_score_scalar(query: &[u8], target: &[u8], gaps: GapCosts) -> LocalScore {
    let (o, e) = (gaps.first(), gaps.extend);
    let n = query.len();
    let mut h = vec![0i32; n];
    let mut ecol = vec![NEG; n];
    let mut best = LocalScore {
        score: 0,
        query_end: 0,
        target_end: 0,
    };
    for (j, &tj) in target.iter().enumerate() {
        let mut diag = 0;
        let mut f = NEG;
        let mut up = 0;
        for i in 0..n {
            let eij = (ecol[i] - e).max(h[i] - o);
            f = (f - e).max(up - o);
            let hij = (diag + score(query[i], tj)).max(eij).max(f).max(0);
            diag = h[i];
            h[i] = hij;
            ecol[i] = eij;
            up = hij;
            if hij > best.score {
                best = LocalScore {
                    score: hij,
                    query_end: i,
                    target_end: j,
                };
            }
        }
    }
    best
}

/// Scalar Smith–Waterman–Gotoh with traceback (quadratic memory): the reference for tests and
/// the fallback when the SIMD traceback is unavailable or disagrees.
pub fn local_alignment_scalar(query: &[u8], target: &[u8], gaps: GapCosts) -> Alignment {
    const FROM_DIAG: u8 = 1;
    const FROM_E: u8 = 2;
    const FROM_F: u8 = 3;
    const E_EXT: u8 = 4;
    const F_EXT: u8 = 8;
    let (o, e) = (gaps.first(), gaps.extend);
    let (n, m) = (query.len(), target.len());
    // dir[j * n + i]; source 0 means H == 0 (the alignment starts after this cell).
    let mut dir = vec![0u8; n * m];
    let mut h = vec![0i32; n];
    let mut ecol = vec![NEG; n];
    let mut best = LocalScore {
        score: 0,
        query_end: 0,
        target_end: 0,
    };
    for (j, &tj) in target.iter().enumerate() {
        let mut diag = 0;
        let mut f = NEG;
        let mut up = 0;
        for i in 0..n {
            let mut d = 0u8;
            let e_ext = ecol[i] - e;
            let e_open = h[i] - o;
            let eij = if e_ext > e_open {
                d |= E_EXT;
                e_ext
            } else {
                e_open
            };
            let f_ext = f - e;
            let f_open = up - o;
            f = if f_ext > f_open {
                d |= F_EXT;
                f_ext
            } else {
                f_open
            };
            let dg = diag + score(query[i], tj);
            let mut hij = 0;
            if dg > hij {
                hij = dg;
                d |= FROM_DIAG;
            }
            if eij > hij {
                hij = eij;
                d = (d & !3) | FROM_E;
            }
            if f > hij {
                hij = f;
                d = (d & !3) | FROM_F;
            }
            diag = h[i];
            h[i] = hij;
            ecol[i] = eij;
            up = hij;
            dir[j * n + i] = d;
            if hij > best.score {
                best = LocalScore {
                    score: hij,
                    query_end: i,
                    target_end: j,
                };
            }
        }
    }
    if best.score == 0 {
        return Alignment {
            score: 0,
            query_start: 0,
            query_end: 0,
            target_start: 0,
            target_end: 0,
            columns: 0,
            identities: 0,
            pairs: Vec::new(),
        };
    }
    // Walk back from the end cell. State 0: H, 1: E, 2: F.
    let mut ops = Vec::new();
    let (mut i, mut j, mut state) = (best.query_end as isize, best.target_end as isize, 0u8);
    while i >= 0 && j >= 0 {
        let d = dir[j as usize * n + i as usize];
        match state {
            0 => match d & 3 {
                FROM_DIAG => {
                    ops.push(Op::Pair);
                    i -= 1;
                    j -= 1;
                    if i < 0 || j < 0 || dir[j as usize * n + i as usize] & 3 == 0 {
                        break;
                    }
                }
                FROM_E => state = 1,
                FROM_F => state = 2,
                _ => break,
            },
            1 => {
                ops.push(Op::TargetOnly);
                if d & E_EXT == 0 {
                    state = 0;
                }
                j -= 1;
            }
            _ => {
                ops.push(Op::QueryOnly);
                if d & F_EXT == 0 {
                    state = 0;
                }
                i -= 1;
            }
        }
    }
    ops.reverse();
    let query_start = best.query_end + 1 - ops.iter().filter(|&&op| op != Op::TargetOnly).count();
    let target_start = best.target_end + 1 - ops.iter().filter(|&&op| op != Op::QueryOnly).count();
    from_ops(query, target, query_start, target_start, &ops, best.score)
}

/// Builds an [`Alignment`] from a path that starts at `(query_start, target_start)`.
pub(crate) fn from_ops(
    query: &[u8],
    target: &[u8],
    query_start: usize,
    target_start: usize,
    ops: &[Op],
    score: i32,
) -> Alignment {
    let (mut i, mut j) = (query_start, target_start);
    let mut identities = 0;
    let mut pairs = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Pair => {
                if query.get(i) == target.get(j) {
                    identities += 1;
                }
                pairs.push((i as u32, j as u32));
                i += 1;
                j += 1;
            }
            Op::QueryOnly => i += 1,
            Op::TargetOnly => j += 1,
        }
    }
    Alignment {
        score,
        query_start,
        query_end: i,
        target_start,
        target_end: j,
        columns: ops.len(),
        identities,
        pairs,
    }
}

/// Score of a path, recomputed from the sequences (used to validate tracebacks).
pub(crate) fn path_score(query: &[u8], target: &[u8], a: &Alignment, gaps: GapCosts) -> i32 {
    let mut total = 0;
    let mut prev: Option<(u32, u32)> = None;
    for &(i, j) in &a.pairs {
        total += score(query[i as usize], target[j as usize]);
        if let Some((pi, pj)) = prev {
            for gap in [i - pi - 1, j - pj - 1] {
                if gap > 0 {
                    total -= gaps.open + gaps.extend * gap as i32;
                }
            }
        }
        prev = Some((i, j));
    }
    total
}
