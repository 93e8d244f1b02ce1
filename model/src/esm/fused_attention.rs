//! Attention of one head for up to 16 queries at a time, fused in AVX-512 registers (x86-64
//! only; other targets keep the `gemm` route).
//!
//! The `gemm` route ([`super::fast`]) computes the `(keys, queries)` scores, runs the softmax
//! over them in memory and multiplies by `V`, three passes with `gemm`'s packing and tile edges
//! at ESM-2's narrow heads (16 wide for the 8M shape). Here the vector lanes hold 16 queries
//! throughout, so nothing is packed and nothing is reduced across lanes:
//!
//! 1. scores: for each key, `Σ_d k[d] · Qᵀ[d]` by fused multiply-adds with `k[d]` broadcast,
//!    eight keys at a time (independent chains), stored as `(keys, 16)`, with the running
//!    maximum of each query;
//! 2. probabilities and context: per key, `p = e^(s − max)` ([`exp16`]) is added to the
//!    normaliser and multiplied into up to 16 `Oᵀ[d]` accumulators with `v[d]` broadcast. Heads
//!    wider than 16 run this pass once per 16 (or 8) dimensions, the first storing `p` for the
//!    others;
//! 3. the context rows `Oᵀ / Σp`, transposed into the output.
//!
//! The operations are the `gemm` route's (a multiply-add chain over the head's dimensions for a
//! score, the same `exp`, one chain over the keys for a context value, the normaliser applied
//! to the context); some sums run in another order, so results agree to rounding (tested).
//! The probabilities are computed two keys ahead of their multiply-adds: the exponential is a
//! long dependency chain, and waiting for it left the multiply-add units idle.

#![allow(unsafe_code)] // AVX-512 intrinsics on raw rows of the fused Q/K/V matrix.

use std::arch::x86_64::*;

use super::kernels::exp16;

/// Queries per call: one per vector lane.
pub(crate) const QUERIES: usize = 16;

/// Keys scored together in pass 1 (independent multiply-add chains in flight).
const KEY_BLOCK: usize = 8;

/// Whether this CPU runs [`attend`] for heads of width `head_dim` (AVX-512F, and a width that
/// splits into 16- and 8-wide groups of accumulators).
pub(crate) fn available(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(8) && std::is_x86_feature_detected!("avx512f")
}

/// Floats of scratch [`attend`] needs for `keys` keys and heads of width `head_dim`.
pub(crate) fn scratch_len(keys: usize, head_dim: usize) -> usize {
    (keys + head_dim) * QUERIES
}

/// Rows of one head: `ptr` to the first row's first element of the head, `stride` floats
/// between rows.
#[derive(Clone, Copy)]
pub(crate) struct Rows {
    pub ptr: *const f32,
    pub stride: usize,
}

/// `softmax(Q·Kᵀ)·V` for `queries ≤ 16` query rows of `q` against `keys` rows of `k` and `v`
/// (each `head_dim` wide, the scaling already in `q`), into `queries` rows of `out` `ldo`
/// apart.
///
/// # Safety
/// [`available`] said yes for `head_dim`; `keys ≥ 1`; the rows lie in memory as given; `out`
/// is writable for `queries` rows of `head_dim` and overlaps no input; `scratch` holds
/// [`scratch_len`]`(keys, head_dim)` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn attend(
    q: Rows,
    k: Rows,
    v: Rows,
    queries: usize,
    keys: usize,
    head_dim: usize,
    out: *mut f32,
    ldo: usize,
    scratch: &mut [f32],
) {
    debug_assert!(queries <= QUERIES && keys > 0 && scratch.len() >= scratch_len(keys, head_dim));
    let (scores, q_t) = scratch.split_at_mut(keys * QUERIES);
    // Qᵀ: dimension by dimension, the queries in the lanes (lanes past `queries` zero, so
    // their scores are 0 and harmless).
    q_t[..head_dim * QUERIES].fill(0.0);
    for i in 0..queries {
        for d in 0..head_dim {
            // SAFETY: row `i < queries` of `q`, element `d < head_dim`.
            q_t[d * QUERIES + i] = unsafe { *q.ptr.add(i * q.stride + d) };
        }
    }
    // SAFETY: the caller's contract, and `scores` holds `keys` vectors.
    unsafe {
        let max = if head_dim == 16 {
            score_16(q_t, k, keys, scores)
        } else {
            score(q_t, k, keys, head_dim, scores)
        };
        let mut inv = _mm512_setzero_ps();
        let mut d0 = 0;
        while d0 < head_dim {
            let width = if head_dim - d0 >= 16 { 16 } else { 8 };
            let pass = Pass {
                d0,
                keys,
                max,
                first: d0 == 0,
                store: d0 + width < head_dim,
            };
            let out = out.add(d0);
            if width == 16 {
                weigh::<16>(pass, scores, v, out, ldo, queries, &mut inv);
            } else {
                weigh::<8>(pass, scores, v, out, ldo, queries, &mut inv);
            }
            d0 += width;
        }
    }
}

/// Pass 1: the scores of every key into `scores` `(keys, 16)`; returns each query's maximum.
///
/// # Safety
/// AVX-512F; `q_t` holds `head_dim` vectors; `k` has `keys` rows of `head_dim`.
#[target_feature(enable = "avx512f")]
unsafe fn score(q_t: &[f32], k: Rows, keys: usize, head_dim: usize, scores: &mut [f32]) -> __m512 {
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    let qt = q_t.as_ptr();
    let out = scores.as_mut_ptr();
    let mut j = 0;
    // SAFETY (all loads and stores): rows `< keys` of `k`, vectors `< head_dim` of `q_t` and
    // `< keys` of `scores`.
    unsafe {
        while j + KEY_BLOCK <= keys {
            let mut acc = [_mm512_setzero_ps(); KEY_BLOCK];
            let row = k.ptr.add(j * k.stride);
            for d in 0..head_dim {
                let qd = _mm512_loadu_ps(qt.add(d * QUERIES));
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(u * k.stride + d)), qd, *a);
                }
            }
            for (u, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add((j + u) * QUERIES), *a);
                max = _mm512_max_ps(max, *a);
            }
            j += KEY_BLOCK;
        }
        score_rest(q_t, k, j..keys, head_dim, scores, max)
    }
}

/// [`score`] for the keys `range` one at a time (those after the last whole block), from the
/// running maximum `max`.
///
/// # Safety
/// As [`score`].
#[target_feature(enable = "avx512f")]
unsafe fn score_rest(
    q_t: &[f32],
    k: Rows,
    range: std::ops::Range<usize>,
    head_dim: usize,
    scores: &mut [f32],
    mut max: __m512,
) -> __m512 {
    // SAFETY (all loads and stores): as in `score`.
    unsafe {
        for j in range {
            let row = k.ptr.add(j * k.stride);
            let mut a = _mm512_setzero_ps();
            for d in 0..head_dim {
                a = _mm512_fmadd_ps(
                    _mm512_set1_ps(*row.add(d)),
                    _mm512_loadu_ps(q_t.as_ptr().add(d * QUERIES)),
                    a,
                );
            }
            _mm512_storeu_ps(scores.as_mut_ptr().add(j * QUERIES), a);
            max = _mm512_max_ps(max, a);
        }
    }
    max
}

/// [`score`] for heads 16 wide, with `Qᵀ` held in registers and the key rows' addresses
/// computed once per block of keys: 128 multiply-adds per block and little else.
///
/// # Safety
/// As [`score`] with `head_dim` 16.
#[target_feature(enable = "avx512f")]
unsafe fn score_16(q_t: &[f32], k: Rows, keys: usize, scores: &mut [f32]) -> __m512 {
    const HD: usize = 16;
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    let out = scores.as_mut_ptr();
    // SAFETY (all loads and stores): as in `score`.
    unsafe {
        let qt: [__m512; HD] =
            std::array::from_fn(|d| _mm512_loadu_ps(q_t.as_ptr().add(d * QUERIES)));
        let mut j = 0;
        while j + KEY_BLOCK <= keys {
            let rows: [*const f32; KEY_BLOCK] =
                std::array::from_fn(|u| k.ptr.add((j + u) * k.stride));
            let mut acc = [_mm512_setzero_ps(); KEY_BLOCK];
            // Written out per dimension: as a loop, LLVM kept `qt` in memory.
            macro_rules! dims {
                ($($d:literal)*) => {$(
                    for (a, row) in acc.iter_mut().zip(rows) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*row.add($d)), qt[$d], *a);
                    }
                )*};
            }
            dims!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            for (u, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add((j + u) * QUERIES), *a);
                max = _mm512_max_ps(max, *a);
            }
            j += KEY_BLOCK;
        }
        score_rest(q_t, k, j..keys, HD, scores, max)
    }
}

/// One pass of [`weigh`] over the keys.
#[derive(Clone, Copy)]
struct Pass {
    /// The first dimension of the context it computes.
    d0: usize,
    keys: usize,
    /// Each query's largest score.
    max: __m512,
    /// The head's first pass: turns the scores into probabilities.
    first: bool,
    /// Stores the probabilities for the passes after it.
    store: bool,
}

/// Pass 2 for dimensions `d0..d0 + C` of the context: `Σ_j p_j · v_j[d]` per query, divided by
/// the normaliser `Σ_j p_j`, into columns `d0..` of `queries` rows of `out`. The first pass
/// over a head computes `p = e^(s − max)` and the normaliser's inverse (into `inv`), storing
/// `p` when more passes follow; later passes read `p` back and use `inv`.
///
/// # Safety
/// AVX-512F; `scores` holds `keys` vectors; `v` has `keys` rows of at least `d0 + C`; `out`
/// (already at column `d0`) is writable for `queries` rows of `C`, `ldo` apart.
#[target_feature(enable = "avx512f")]
unsafe fn weigh<const C: usize>(
    pass: Pass,
    scores: &mut [f32],
    v: Rows,
    out: *mut f32,
    ldo: usize,
    queries: usize,
    inv: &mut __m512,
) {
    let mut acc = [_mm512_setzero_ps(); C];
    let mut sum = _mm512_setzero_ps();
    let s = scores.as_mut_ptr();
    // SAFETY (all loads and stores): vectors `< keys` of `scores`, rows `< keys` of `v` and
    // columns `d0..d0 + C` within the head, rows `< queries` of `out` (the caller's contract).
    unsafe {
        // The probability of key `j`, computed two keys ahead of its multiply-adds, so that the
        // exponential's long dependency chain overlaps the previous keys' products (one key
        // ahead gave 1.1x the gemm route, two 1.2x; the exponentials as a pass of their own,
        // 1.0x).
        let probability = |j: usize| {
            let at = s.add(j * QUERIES);
            if pass.first {
                let p = exp16(_mm512_sub_ps(_mm512_loadu_ps(at), pass.max));
                if pass.store {
                    _mm512_storeu_ps(at, p);
                }
                p
            } else {
                _mm512_loadu_ps(at)
            }
        };
        let mut next = probability(0);
        let mut after = if pass.keys > 1 { probability(1) } else { next };
        for j in 0..pass.keys {
            let p = next;
            next = after;
            if j + 2 < pass.keys {
                after = probability(j + 2);
            }
            if pass.first {
                sum = _mm512_add_ps(sum, p);
            }
            let row = v.ptr.add(j * v.stride + pass.d0);
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(p, _mm512_set1_ps(*row.add(c)), *a);
            }
        }
        if pass.first {
            *inv = _mm512_div_ps(_mm512_set1_ps(1.0), sum);
        }
        let mut lanes = [0f32; QUERIES];
        for (c, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(lanes.as_mut_ptr(), _mm512_mul_ps(*a, *inv));
            for (i, &x) in lanes.iter().enumerate().take(queries) {
                *out.add(i * ldo + c) = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention in f64, row-major `(rows, stride)` inputs.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        stride: usize,
        queries: usize,
        keys: usize,
        hd: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; queries * hd];
        for i in 0..queries {
            let s: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..hd)
                        .map(|d| (q[i * stride + d] * k[j * stride + d]) as f64)
                        .sum()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for d in 0..hd {
                out[i * hd + d] = (0..keys)
                    .map(|j| (s[j] - m).exp() / z * v[j * stride + d] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn fused_attention_matches_naive() {
        if !available(16) {
            eprintln!("no AVX-512: skipped");
            return;
        }
        // Head widths of ESM-2 (16, 24, 32, 64), partial query groups, key counts around the
        // key block, one key.
        for (hd, queries, keys) in [
            (16, 16, 37),
            (16, 5, 8),
            (16, 1, 1),
            (24, 16, 19),
            (32, 11, 64),
            (64, 16, 130),
            (8, 3, 9),
        ] {
            let stride = hd * 3 + 5; // rows of a wider matrix, as in fused Q/K/V
            let gen = |seed: usize, n: usize| -> Vec<f32> {
                (0..n * stride)
                    .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) * 0.004)
                    .collect()
            };
            let (q, k, v) = (gen(1, queries), gen(2, keys), gen(3, keys));
            let mut out = vec![f32::NAN; queries * (hd + 2)];
            let mut scratch = vec![0f32; scratch_len(keys, hd)];
            let rows = |x: &[f32]| Rows {
                ptr: x.as_ptr(),
                stride,
            };
            // SAFETY: AVX-512F detected; buffers sized above.
            unsafe {
                attend(
                    rows(&q),
                    rows(&k),
                    rows(&v),
                    queries,
                    keys,
                    hd,
                    out.as_mut_ptr(),
                    hd + 2,
                    &mut scratch,
                )
            };
            let want = naive(&q, &k, &v, stride, queries, keys, hd);
            for i in 0..queries {
                for d in 0..hd {
                    let got = out[i * (hd + 2) + d] as f64;
                    assert!(
                        (got - want[i * hd + d]).abs() < 2e-6,
                        "hd {hd}, {queries}x{keys}: [{i}][{d}] {got} vs {}",
                        want[i * hd + d]
                    );
                }
                assert!(out[i * (hd + 2) + hd].is_nan(), "wrote past the row");
            }
        }
    }
}
