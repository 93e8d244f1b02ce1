//! Striped Smith–Waterman (Farrar 2007) on 16 lanes of `i16` with AVX2, score and end cell.
//!
//! The query profile is built once per query and reused for every target. Scores that could
//! have saturated `i16` make the kernel return `None`, and callers use the scalar twin.

#![allow(unsafe_code)] // AVX2 intrinsics behind run-time feature detection.

use crate::align::{local_score_scalar, LocalScore};
use crate::alphabet::ALPHABET_SIZE;
use crate::matrix::{score, GapCosts};

const LANES: usize = 16;
/// Score of the padding rows of the striped profile: low enough never to start or carry an
/// alignment.
const PAD: i16 = -1000;

/// Query scores laid out for the striped kernel: for each residue code, `seg_len` vectors of
/// 16 lanes, lane `l` of vector `s` holding query position `l * seg_len + s`.
#[derive(Debug, Clone)]
pub struct QueryProfile {
    query: Vec<u8>,
    seg_len: usize,
    data: Vec<i16>,
}

impl QueryProfile {
    /// Builds the profile of an encoded query.
    pub fn new(query: &[u8]) -> Self {
        let seg_len = query.len().div_ceil(LANES).max(1);
        let mut data = vec![PAD; ALPHABET_SIZE * seg_len * LANES];
        for c in 0..ALPHABET_SIZE {
            for s in 0..seg_len {
                for l in 0..LANES {
                    if let Some(&q) = query.get(l * seg_len + s) {
                        data[(c * seg_len + s) * LANES + l] = score(c as u8, q) as i16;
                    }
                }
            }
        }
        QueryProfile {
            query: query.to_vec(),
            seg_len,
            data,
        }
    }

    /// The encoded query.
    pub fn query(&self) -> &[u8] {
        &self.query
    }

    /// Best local score of the query against `target` and its end cell (same tie-break as
    /// [`local_score_scalar`]); uses AVX2 when the CPU has it.
    pub fn local_score(&self, target: &[u8], gaps: GapCosts) -> LocalScore {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                if let Some(s) = unsafe { avx2::local_score(self, target, gaps) } {
                    return s;
                }
            }
        }
        local_score_scalar(&self.query, target, gaps)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QueryProfile, LANES};
    use crate::align::LocalScore;
    use crate::alphabet::ALPHABET_SIZE;
    use crate::matrix::GapCosts;
    use std::arch::x86_64::*;

    const NEG: i16 = -16000;

    /// Shifts lanes up by one (lane 0 becomes `fill`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn shift_in(v: __m256i, fill: i16) -> __m256i {
        let lo_to_hi = _mm256_permute2x128_si256::<0x08>(v, v);
        _mm256_insert_epi16::<0>(_mm256_alignr_epi8::<14>(v, lo_to_hi), fill)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(v: __m256i) -> [i16; LANES] {
        let mut out = [0i16; LANES];
        // SAFETY: `out` is 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, v) };
        out
    }

    /// Striped kernel; `None` when a score may have saturated.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn local_score(
        p: &QueryProfile,
        target: &[u8],
        gaps: GapCosts,
    ) -> Option<LocalScore> {
        let seg = p.seg_len;
        let zero = _mm256_setzero_si256();
        let v_open = _mm256_set1_epi16(gaps.first().min(i16::MAX as i32) as i16);
        let v_ext = _mm256_set1_epi16(gaps.extend.min(i16::MAX as i32) as i16);
        let v_neg = _mm256_set1_epi16(NEG);
        let mut h_a = vec![zero; seg];
        let mut h_b = vec![zero; seg];
        let mut e_buf = vec![v_neg; seg];
        let (mut h_store, mut h_load) = (h_a.as_mut_ptr(), h_b.as_mut_ptr());
        let e = e_buf.as_mut_ptr();
        let mut best = LocalScore {
            score: 0,
            query_end: 0,
            target_end: 0,
        };
        let mut v_best = zero;
        for (j, &c) in target.iter().enumerate() {
            let base = (c as usize).min(ALPHABET_SIZE - 1) * seg * LANES;
            // SAFETY (whole loop body): `prof` has `seg * LANES` values for every code below
            // ALPHABET_SIZE; `h_store`, `h_load` and `e` point at `seg` vectors each; indices
            // stay below `seg`.
            let prof = unsafe { p.data.as_ptr().add(base) } as *const __m256i;
            let mut vf = v_neg;
            let mut vh = shift_in(unsafe { *h_store.add(seg - 1) }, 0);
            std::mem::swap(&mut h_store, &mut h_load);
            let mut vmax = zero;
            for i in 0..seg {
                unsafe {
                    vh = _mm256_adds_epi16(vh, _mm256_loadu_si256(prof.add(i)));
                    let ve = *e.add(i);
                    vh = _mm256_max_epi16(vh, ve);
                    vh = _mm256_max_epi16(vh, vf);
                    vh = _mm256_max_epi16(vh, zero);
                    vmax = _mm256_max_epi16(vmax, vh);
                    *h_store.add(i) = vh;
                    let vh_open = _mm256_subs_epi16(vh, v_open);
                    *e.add(i) = _mm256_max_epi16(_mm256_subs_epi16(ve, v_ext), vh_open);
                    vf = _mm256_max_epi16(_mm256_subs_epi16(vf, v_ext), vh_open);
                    vh = *h_load.add(i);
                }
            }
            // Lazy F: carry vertical gaps across the lane boundaries until they stop mattering.
            'lazy: for _ in 0..LANES {
                vf = shift_in(vf, NEG);
                for i in 0..seg {
                    unsafe {
                        let vh = _mm256_max_epi16(*h_store.add(i), vf);
                        *h_store.add(i) = vh;
                        vmax = _mm256_max_epi16(vmax, vh);
                        let vh_open = _mm256_subs_epi16(vh, v_open);
                        *e.add(i) = _mm256_max_epi16(*e.add(i), vh_open);
                        vf = _mm256_subs_epi16(vf, v_ext);
                        if _mm256_movemask_epi8(_mm256_cmpgt_epi16(vf, vh_open)) == 0 {
                            break 'lazy;
                        }
                    }
                }
            }
            if _mm256_movemask_epi8(_mm256_cmpgt_epi16(vmax, v_best)) == 0 {
                continue;
            }
            let col_max = lanes(vmax).into_iter().max().unwrap_or(0) as i32;
            if col_max >= i16::MAX as i32 {
                return None;
            }
            let mut first = usize::MAX;
            for s in 0..seg {
                for (l, x) in lanes(unsafe { *h_store.add(s) }).into_iter().enumerate() {
                    if x as i32 == col_max {
                        first = first.min(l * seg + s);
                    }
                }
            }
            best = LocalScore {
                score: col_max,
                query_end: first,
                target_end: j,
            };
            v_best = _mm256_set1_epi16(col_max as i16);
        }
        drop((h_a, h_b, e_buf));
        Some(best)
    }
}
