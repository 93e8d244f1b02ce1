//! Element-wise and row kernels of the CPU inference path: layer norm, softmax, GELU (erf),
//! rotary embedding and a thin wrapper over `gemm`.
//!
//! The kernels are plain loops written so that LLVM vectorises them; each public entry point is
//! compiled three times (AVX-512, AVX2+FMA, baseline) and picks the widest the CPU supports at
//! run time, since the crate itself is built for the generic x86-64 target.

#![allow(unsafe_code)] // SIMD kernels: target-feature dispatch and raw-pointer GEMM calls.

use std::sync::OnceLock;

/// SIMD level detected once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    V4,
    V3,
    Base,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("fma")
            {
                return Level::V4;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Level::V3;
            }
        }
        Level::Base
    })
}

/// Defines `pub fn $name(args)` dispatching to AVX-512 / AVX2 / baseline copies of `$body`.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2")]
            unsafe fn v4($($arg: $ty),*) { inner($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,bmi2")]
            unsafe fn v3($($arg: $ty),*) { inner($($arg),*) }
            match level() {
                // SAFETY: the features were detected at run time.
                #[cfg(target_arch = "x86_64")]
                Level::V4 => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                Level::V3 => unsafe { v3($($arg),*) },
                _ => inner($($arg),*),
            }
        }
    };
}

const LANES: usize = 16;

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `e^x` (Cephes polynomial, about 1 ulp on the range softmax uses). Written with `mul_add`,
/// which the kernels' AVX2 and AVX-512 builds turn into fused multiply-adds (half the
/// instructions of separate multiplies and adds; softmax is a quarter of the 8M shape's time on
/// natural lengths).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let fx = x.mul_add(std::f32::consts::LOG2_E, 0.5).floor();
    let r = fx.mul_add(2.121_944_4e-4, fx.mul_add(-0.693_359_4, x));
    let z = r * r;
    let mut y = 1.987_569e-4_f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 0.5);
    y = y.mul_add(z, r + 1.0);
    // 2^fx through the bits of fx + 1.5·2^23 (fx is an integer in [-126, 127]); a plain
    // `as i32` would not vectorise (saturating conversion).
    let bits = (fx + 12_582_912.0).to_bits();
    y * f32::from_bits(bits.wrapping_sub(0x4B40_0000 - 127) << 23)
}

/// `erf(x)` as a rational approximation (Eigen's `generic_fast_erf_float`, a few ulp).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.954_6e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    p *= x;
    let mut q = -1.456_607e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    p / q
}

multiversion! {
    /// Layer norm of each `h`-wide row of `src` into `dst` (biased variance, as PyTorch).
    pub fn layer_norm_rows(src: &[f32], dst: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let h = weight.len();
        for (s, d) in src.chunks_exact(h).zip(dst.chunks_exact_mut(h)) {
            let mean = sum(s) / h as f32;
            for (d, s) in d.iter_mut().zip(s) {
                *d = s - mean;
            }
            let mut acc = [0f32; LANES];
            let chunks = d.chunks_exact(LANES);
            let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for i in 0..LANES {
                    acc[i] += c[i] * c[i];
                }
            }
            let var = (acc.iter().sum::<f32>() + rest) / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((d, w), b) in d.iter_mut().zip(weight).zip(bias) {
                *d = *d * inv * w + b;
            }
        }
    }
}

/// The smallest and largest element (0, 0 for an empty slice; NaN is skipped).
#[inline(always)]
fn min_max(xs: &[f32]) -> (f32, f32) {
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let lo = rest
        .iter()
        .chain(&lo)
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = rest
        .iter()
        .chain(&hi)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    if lo <= hi {
        (lo, hi)
    } else {
        (0.0, 0.0) // empty, or only NaN
    }
}

multiversion! {
    /// Quantises each `k`-wide row of `src` to bytes over the row's own range: `x ≈ zero +
    /// scale · byte`, `zero` the row's minimum and `scale` its range / 255 (1 for a constant
    /// row), into the first `k` bytes of a `kp`-wide row of `dst`, the row's scale and zero to
    /// `scales` and `zeros`. An asymmetric range uses all 256 levels where a symmetric ±max one
    /// would waste half of them on rows that are mostly of one sign (the GELU activations
    /// feeding the second feed-forward projection). Rounds half to even by adding 2²³ (so the
    /// low mantissa bits are the rounded integer): unlike `round` or an `as` cast, this
    /// vectorises, and a NaN input gives a defined byte. The portable form of
    /// [`quantize_rows_u8`].
    pub fn quantize_rows_u8_lanes(
        src: &[f32],
        k: usize,
        dst: &mut [u8],
        kp: usize,
        scales: &mut [f32],
        zeros: &mut [f32],
    ) {
        let rows = src.chunks_exact(k).zip(dst.chunks_exact_mut(kp));
        for ((row, dst), (scale, zero)) in rows.zip(scales.iter_mut().zip(zeros.iter_mut())) {
            let (lo, hi) = min_max(row);
            *zero = lo;
            *scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let inv = 1.0 / *scale;
            for (d, &x) in dst.iter_mut().zip(row) {
                let r = ((x - lo) * inv).clamp(0.0, 255.0);
                *d = (r + 8_388_608.0).to_bits() as u8;
            }
        }
    }
}

/// Quantises each `k`-wide row of `src` to bytes over the row's own range
/// ([`quantize_rows_u8_lanes`]), with AVX-512 intrinsics where the CPU has them: LLVM turns the
/// portable minimum and maximum into mask shuffles (a seventh of an int8 model's time went
/// there). Both give the same bytes, scales and zeros.
pub fn quantize_rows_u8(
    src: &[f32],
    k: usize,
    dst: &mut [u8],
    kp: usize,
    scales: &mut [f32],
    zeros: &mut [f32],
) {
    let rows = src.len() / k.max(1);
    assert!(kp >= k && dst.len() >= rows * kp && scales.len() >= rows && zeros.len() >= rows);
    #[cfg(target_arch = "x86_64")]
    if level() == Level::V4 {
        // SAFETY: AVX-512F/BW was detected at run time; shapes checked above.
        return unsafe { avx512_quantize::rows_u8(src, k, dst, kp, scales, zeros) };
    }
    quantize_rows_u8_lanes(src, k, dst, kp, scales, zeros)
}

/// [`quantize_rows_u8_lanes`] with AVX-512 intrinsics: `vminps`/`vmaxps` keep their first
/// operand's lanes where the other is NaN, exactly the portable selects, and `vcvtps2dq` rounds
/// half to even like the portable 2²³ trick, so the bytes are the same.
#[cfg(target_arch = "x86_64")]
mod avx512_quantize {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512F/BW; `src` holds whole rows of `k`, `dst` as many rows of `kp ≥ k`,
    /// `scales` and `zeros` one entry per row.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn rows_u8(
        src: &[f32],
        k: usize,
        dst: &mut [u8],
        kp: usize,
        scales: &mut [f32],
        zeros: &mut [f32],
    ) {
        let rows = src.len() / k.max(1);
        let tail: __mmask16 = ((1u32 << (k % 16)) - 1) as __mmask16;
        let full = k - k % 16;
        for r in 0..rows {
            // SAFETY (all loads and stores): within row `r` of `src` and `dst`, tails masked.
            unsafe {
                let s = src.as_ptr().add(r * k);
                let d = dst.as_mut_ptr().add(r * kp);
                let (mut lo, mut hi) = (
                    _mm512_set1_ps(f32::INFINITY),
                    _mm512_set1_ps(f32::NEG_INFINITY),
                );
                for c in (0..full).step_by(16) {
                    let x = _mm512_loadu_ps(s.add(c));
                    lo = _mm512_min_ps(x, lo);
                    hi = _mm512_max_ps(x, hi);
                }
                if tail != 0 {
                    let x = _mm512_maskz_loadu_ps(tail, s.add(full));
                    lo = _mm512_mask_min_ps(lo, tail, x, lo);
                    hi = _mm512_mask_max_ps(hi, tail, x, hi);
                }
                let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
                zeros[r] = lo;
                scales[r] = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                let (vlo, inv) = (_mm512_set1_ps(lo), _mm512_set1_ps(1.0 / scales[r]));
                let (zero, top) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
                let bytes = |x: __m512| {
                    let q = _mm512_mul_ps(_mm512_sub_ps(x, vlo), inv);
                    // max(q, 0) keeps 0 where q is NaN, as the portable clamp's NaN does.
                    let q = _mm512_min_ps(_mm512_max_ps(q, zero), top);
                    _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q))
                };
                for c in (0..full).step_by(16) {
                    let b = bytes(_mm512_loadu_ps(s.add(c)));
                    _mm_storeu_si128(d.add(c).cast(), b);
                }
                if tail != 0 {
                    let b = bytes(_mm512_maskz_loadu_ps(tail, s.add(full)));
                    _mm_mask_storeu_epi8(d.add(full).cast(), tail, b);
                }
            }
        }
    }
}

/// Applies `f` to every element, [`LANES`] at a time, the tail through a padded block: an
/// element-wise loop left to LLVM vectorises by four vectors and runs up to 63 trailing
/// elements one by one, which for costly functions (exp, erf) over rows of a few hundred
/// elements doubles the time.
#[inline(always)]
fn map_lanes(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for v in c.iter_mut() {
            *v = f(*v);
        }
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut block = [0f32; LANES];
        block[..tail.len()].copy_from_slice(tail);
        for v in block.iter_mut() {
            *v = f(*v);
        }
        tail.copy_from_slice(&block[..tail.len()]);
    }
}

multiversion! {
    /// Softmax down each of the `cols` columns of a `(rows, cols)` row-major block (the scores
    /// of `cols` queries against `rows` keys, transposed) without the division: each column
    /// becomes `e^(x - max)` in place and `inv_sums[c]` its normaliser `1 / Σ e^(x - max)`.
    /// Attention applies the normaliser to its `(cols, head_dim)` output instead of the
    /// probabilities, and sums the exponentials as it computes them (the block is read twice).
    /// Every pass runs along rows, so the lanes hold different queries: no horizontal
    /// reductions, and tails only in the last lanes of a row.
    pub fn softmax_cols_deferred_lanes(xs: &mut [f32], cols: usize, inv_sums: &mut [f32]) {
        let inv_sums = &mut inv_sums[..cols];
        inv_sums.fill(f32::NEG_INFINITY);
        for row in xs.chunks_exact(cols) {
            for (m, &v) in inv_sums.iter_mut().zip(row) {
                *m = if v > *m { v } else { *m };
            }
        }
        let mut sums = [0f32; MAX_COLS];
        let sums = &mut sums[..cols];
        for row in xs.chunks_exact_mut(cols) {
            for ((v, &m), s) in row.iter_mut().zip(inv_sums.iter()).zip(sums.iter_mut()) {
                *v = exp(*v - m);
                *s += *v;
            }
        }
        for (inv, s) in inv_sums.iter_mut().zip(sums.iter()) {
            *inv = 1.0 / s;
        }
    }
}

/// Most columns of [`softmax_cols_deferred`]: the attention's query block.
pub const MAX_COLS: usize = 128;

/// Softmax down each column of a `(rows, cols)` block, `cols ≤ MAX_COLS`, without the division
/// ([`softmax_cols_deferred_lanes`]); with AVX-512 intrinsics where the CPU has them.
pub fn softmax_cols_deferred(xs: &mut [f32], cols: usize, inv_sums: &mut [f32]) {
    assert!(cols <= MAX_COLS && inv_sums.len() >= cols && xs.len().is_multiple_of(cols.max(1)));
    #[cfg(target_arch = "x86_64")]
    if level() == Level::V4 {
        // SAFETY: AVX-512F was detected at run time; shapes checked above.
        return unsafe { avx512_softmax::cols_deferred(xs, cols, inv_sums) };
    }
    softmax_cols_deferred_lanes(xs, cols, inv_sums)
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512_softmax::exp16;

/// The column softmax with AVX-512 intrinsics, 16 columns (queries) at a time. `e^x` as
/// `2^k · e^r` with `k = round(x·log₂e)` and `r = x − k·ln 2` (Cody–Waite, two constants), `e^r`
/// by a degree-5 minimax polynomial with `e^0 = 1` exact (relative error 1.5e-7 on
/// `|r| ≤ ln 2 / 2`; fitted with numpy, the coefficients oneDNN uses to the last bits), and the
/// scaling by `vscalefps`, which also gives 0 far below `e^-87` without a clamp (the scalar
/// [`exp`] builds `2^k` from exponent bits and must clamp): eleven vector operations per 16
/// values, with the subtraction of the maximum, against the scalar form's eighteen. The last
/// columns of a row are masked loads and stores.
#[cfg(target_arch = "x86_64")]
mod avx512_softmax {
    use std::arch::x86_64::*;

    /// `e^x` of 16 lanes (see the module's doc).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp16(x: __m512) -> __m512 {
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm512_set1_ps(8.290_315e-3);
        for c in [4.189_793e-2, 0.166_676_36, 0.499_991_5, 0.999_999_7, 1.0] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(y, k)
    }

    /// # Safety
    /// The CPU has AVX-512F; `xs` holds whole rows of `cols` and `inv_sums` at least `cols`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn cols_deferred(xs: &mut [f32], cols: usize, inv_sums: &mut [f32]) {
        let rows = xs.len() / cols.max(1);
        let p = xs.as_mut_ptr();
        for c0 in (0..cols).step_by(16) {
            let mask: __mmask16 = ((1u32 << (cols - c0).min(16)) - 1) as __mmask16;
            // SAFETY (all loads and stores): rows below `rows`, lanes masked to columns < `cols`.
            unsafe {
                let at = |r: usize| p.add(r * cols + c0);
                let (mut m0, mut m1) = (
                    _mm512_set1_ps(f32::NEG_INFINITY),
                    _mm512_set1_ps(f32::NEG_INFINITY),
                );
                let mut r = 0;
                while r + 2 <= rows {
                    m0 = _mm512_max_ps(m0, _mm512_maskz_loadu_ps(mask, at(r)));
                    m1 = _mm512_max_ps(m1, _mm512_maskz_loadu_ps(mask, at(r + 1)));
                    r += 2;
                }
                if r < rows {
                    m0 = _mm512_max_ps(m0, _mm512_maskz_loadu_ps(mask, at(r)));
                }
                let m = _mm512_max_ps(m0, m1);
                let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut r = 0;
                while r + 2 <= rows {
                    let e0 = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, at(r)), m));
                    let e1 = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, at(r + 1)), m));
                    _mm512_mask_storeu_ps(at(r), mask, e0);
                    _mm512_mask_storeu_ps(at(r + 1), mask, e1);
                    s0 = _mm512_add_ps(s0, e0);
                    s1 = _mm512_add_ps(s1, e1);
                    r += 2;
                }
                if r < rows {
                    let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, at(r)), m));
                    _mm512_mask_storeu_ps(at(r), mask, e);
                    s0 = _mm512_add_ps(s0, e);
                }
                let inv = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_add_ps(s0, s1));
                _mm512_mask_storeu_ps(inv_sums.as_mut_ptr().add(c0), mask, inv);
            }
        }
    }
}

multiversion! {
    /// Rounds `k`-wide rows of `src` to bf16 bits ([`super::bf16::to_bf16`]) into rows of
    /// `dst` `kp` apart (the padding is left as it is).
    pub fn round_rows_bf16(src: &[f32], k: usize, dst: &mut [u16], kp: usize) {
        for (s, d) in src.chunks_exact(k).zip(dst.chunks_exact_mut(kp)) {
            for (d, &x) in d.iter_mut().zip(s) {
                *d = super::bf16::to_bf16(x);
            }
        }
    }
}

multiversion! {
    /// In-place `x · Φ(x)` with the exact (erf) normal CDF, as `nn.GELU()`.
    pub fn gelu_erf(xs: &mut [f32]) {
        map_lanes(xs, |x| 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)));
    }
}

multiversion! {
    /// Fills each `bias.len()`-wide row of `dst` with `bias`.
    pub fn fill_rows(dst: &mut [f32], bias: &[f32]) {
        for row in dst.chunks_exact_mut(bias.len()) {
            row.copy_from_slice(bias);
        }
    }
}

multiversion! {
    /// Adds `bias` to each `bias.len()`-wide row of `dst`.
    pub fn add_rows(dst: &mut [f32], bias: &[f32]) {
        for row in dst.chunks_exact_mut(bias.len()) {
            for (d, b) in row.iter_mut().zip(bias) {
                *d += b;
            }
        }
    }
}

multiversion! {
    /// Scales and rotates the query and key parts of fused `[q | k | v]` rows in place
    /// (`rotate_half` convention). `positions[r]` is row `r`'s position; `cos`/`sin` are
    /// `(positions, head_dim/2)` tables.
    pub fn rotary_qk(
        qkv: &mut [f32],
        positions: &[u32],
        cos: &[f32],
        sin: &[f32],
        hidden: usize,
        head_dim: usize,
        q_scale: f32,
    ) {
        let half = head_dim / 2;
        for (row, &pos) in qkv.chunks_exact_mut(3 * hidden).zip(positions) {
            let c = &cos[pos as usize * half..(pos as usize + 1) * half];
            let s = &sin[pos as usize * half..(pos as usize + 1) * half];
            let (q, rest) = row.split_at_mut(hidden);
            let k = &mut rest[..hidden];
            for (part, scale) in [(q, q_scale), (k, 1.0)] {
                for head in part.chunks_exact_mut(head_dim) {
                    let (x1, x2) = head.split_at_mut(half);
                    // Zipped slices, not indices: indexing kept this loop scalar.
                    for (((x1, x2), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(c).zip(s) {
                        let (a, b) = (*x1 * scale, *x2 * scale);
                        *x1 = a * c - b * s;
                        *x2 = b * c + a * s;
                    }
                }
            }
        }
    }
}

/// `out[m × n] (+)= a[m × k] · b` for row-major `out` (row stride `ldo`) and `a` (row stride
/// `lda`), split over the current rayon pool by `gemm` itself. `b` is given by its strides:
/// `b_rs` between rows (the `k` index) and `b_cs` between columns (the `n` index), so a PyTorch
/// `[n, k]` weight is `b_rs = 1, b_cs = k`.
///
/// # Safety
/// As [`matmul_strided`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_parallel(
    m: usize,
    n: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    accumulate: bool,
    a: *const f32,
    lda: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
) {
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded from the caller's contract (row-major `out` and `a`).
    unsafe {
        gemm_strided(
            (m, n, k),
            (out, ldo, 1),
            (a, lda, 1),
            (b, b_rs, b_cs),
            accumulate,
            par,
        )
    }
}

/// Single-threaded `out (m, n) = a (m, k) · b (k, n)` with every stride given: element `(r, c)`
/// of a matrix `x` at `x + r·x_rs + c·x_cs`. `gemm` picks its kernel's orientation from `out`'s
/// strides (the long tile dimension runs along `out`'s unit stride).
///
/// # Safety
/// Each pointer covers its matrix under its strides; `out` does not overlap `a` or `b`.
pub unsafe fn matmul_strided(
    dims: (usize, usize, usize),
    out: (*mut f32, usize, usize),
    a: (*const f32, usize, usize),
    b: (*const f32, usize, usize),
) {
    // SAFETY: the caller's contract.
    unsafe { gemm_strided(dims, out, a, b, false, gemm::Parallelism::None) }
}

/// `out (+)= a · b` by `gemm`, every matrix as `(pointer, row stride, column stride)`.
///
/// # Safety
/// As [`matmul_strided`].
unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    (out, out_rs, out_cs): (*mut f32, usize, usize),
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
    accumulate: bool,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the pointers and strides satisfy `gemm`'s contract by the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            out_cs as isize,
            out_rs as isize,
            accumulate,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        let mut worst_exp = 0f32;
        let mut worst_erf = 0f64;
        for i in -20000..=2000 {
            let x = i as f32 * 0.004;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - want) / want).abs() as f32);
        }
        for i in -8000..=8000 {
            let x = i as f32 * 0.001;
            worst_erf = worst_erf.max((erf(x) as f64 - erf_ref(x as f64)).abs());
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
    }

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction, in f64.
    fn erf_ref(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // erfc asymptotic via continued fraction (Lentz), ample for |x| > 3.
            let a = x.abs();
            let mut f = a;
            for n in (1..60).rev() {
                f = a + (n as f64 / 2.0) / f;
            }
            let erfc = (-a * a).exp() / (f * std::f64::consts::PI.sqrt());
            return (1.0 - erfc).copysign(x);
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn activation_rows_round_over_their_own_range() {
        // A GELU-like row (mostly positive), a constant row, an all-zero row, one with a NaN.
        let k = 40;
        let mut src: Vec<f32> = (0..k)
            .map(|i| (i as f32 * 0.37).sin().max(-0.17) * 3.0)
            .collect();
        src.extend(std::iter::repeat_n(-2.5f32, k));
        src.extend(std::iter::repeat_n(0.0f32, k));
        let mut with_nan: Vec<f32> = (0..k).map(|i| i as f32 - 7.0).collect();
        with_nan[3] = f32::NAN;
        src.extend(with_nan);
        let (rows, kp) = (4, 44);
        let mut dst = vec![0u8; rows * kp];
        let (mut scales, mut zeros) = (vec![0f32; rows], vec![0f32; rows]);
        quantize_rows_u8(&src, k, &mut dst, kp, &mut scales, &mut zeros);
        for r in 0..rows {
            let row = &src[r * k..(r + 1) * k];
            let finite = row.iter().filter(|x| x.is_finite());
            let lo = finite.clone().fold(f32::INFINITY, |a, &b| a.min(b));
            let hi = finite.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(zeros[r], lo, "row {r}: zero point is the minimum");
            for (t, &x) in row.iter().enumerate().filter(|(_, x)| x.is_finite()) {
                let back = zeros[r] + scales[r] * f32::from(dst[r * kp + t]);
                // Half a level, the 256 levels spanning the row's own range.
                assert!(
                    (back - x).abs() <= (hi - lo) / 255.0 * 0.5 + 1e-6,
                    "row {r}[{t}]"
                );
            }
        }
        assert!(
            dst[kp..2 * kp].iter().all(|&b| b == 0),
            "a constant row is its zero point"
        );
        assert_eq!(scales[1], 1.0);
    }

    #[test]
    fn quantize_rows_u8_matches_its_portable_twin() {
        // Widths with and without a 16-lane tail; rows with NaN, infinities, signed zeros, a
        // constant row and one of only NaN.
        for k in [5, 16, 40, 320, 1283] {
            let mut src: Vec<f32> = (0..6 * k)
                .map(|i| ((i * 7919 % 1009) as f32 - 400.0) * 0.013)
                .collect();
            src[3] = f32::NAN;
            src[k + 1] = -0.0;
            src[k + 2] = f32::INFINITY;
            src[2 * k..3 * k].fill(1.5);
            src[3 * k..4 * k].fill(f32::NAN);
            src[4 * k] = f32::NEG_INFINITY;
            let (rows, kp) = (6, k.next_multiple_of(4));
            type Quantize = fn(&[f32], usize, &mut [u8], usize, &mut [f32], &mut [f32]);
            let run = |f: Quantize| {
                let mut dst = vec![7u8; rows * kp];
                let (mut scales, mut zeros) = (vec![0f32; rows], vec![0f32; rows]);
                f(&src, k, &mut dst, kp, &mut scales, &mut zeros);
                (dst, scales, zeros)
            };
            let (fast, portable) = (run(quantize_rows_u8), run(quantize_rows_u8_lanes));
            assert_eq!(fast.0, portable.0, "bytes, k = {k}");
            for (a, b) in fast
                .1
                .iter()
                .zip(&portable.1)
                .chain(fast.2.iter().zip(&portable.2))
            {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "scale or zero, k = {k}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_accurate() {
        if level() != Level::V4 {
            eprintln!("no AVX-512: skipped");
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0f64;
        for i in (-21500..=2000).step_by(16) {
            let xs: [f32; 16] = std::array::from_fn(|l| (i + l as i32) as f32 * 0.004);
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F detected above; 16-float arrays.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    avx512_softmax::exp16(_mm512_loadu_ps(xs.as_ptr())),
                )
            };
            for (x, g) in xs.iter().zip(got) {
                let want = (*x as f64).exp();
                worst = worst.max(((g as f64 - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "exp relative error {worst}");
        // Far below e^-87 the scaling gives exact zeros, and e^0 is exactly 1.
        // SAFETY: as above.
        let (tiny, one) = unsafe {
            (
                _mm512_reduce_max_ps(avx512_softmax::exp16(_mm512_set1_ps(-200.0))),
                _mm512_reduce_max_ps(avx512_softmax::exp16(_mm512_set1_ps(0.0))),
            )
        };
        assert_eq!((tiny, one), (0.0, 1.0));
    }

    #[test]
    fn softmax_and_layer_norm_match_naive() {
        type Softmax = fn(&mut [f32], usize, &mut [f32]);
        let kernels: [Softmax; 2] = [softmax_cols_deferred, softmax_cols_deferred_lanes];
        for (rows, cols) in [(37, 48), (5, 37), (96, 16), (3, 128), (1, 5), (44, 21)] {
            let block: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7 + (i / cols) as f32 * 0.01)
                .collect();
            for softmax in kernels {
                let mut sm = block.clone();
                let mut inv = vec![0f32; cols];
                softmax(&mut sm, cols, &mut inv);
                for c in 0..cols {
                    let column: Vec<f32> = (0..rows).map(|r| block[r * cols + c]).collect();
                    let m = column.iter().cloned().fold(f32::MIN, f32::max);
                    let z: f64 = column.iter().map(|v| ((v - m) as f64).exp()).sum();
                    for (r, v) in column.iter().enumerate() {
                        let got = (sm[r * cols + c] * inv[c]) as f64;
                        assert!(
                            (((v - m) as f64).exp() / z - got).abs() < 1e-6,
                            "{rows}x{cols}"
                        );
                    }
                }
            }
        }
        let xs: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let w: Vec<f32> = (0..48).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..48).map(|i| i as f32 * -0.02).collect();
        let mut ln = vec![0f32; 96];
        layer_norm_rows(&xs, &mut ln, &w, &b, 1e-5);
        for (row, got) in xs.chunks(48).zip(ln.chunks(48)) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 48.0;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 48.0;
            for i in 0..48 {
                let want = (row[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
                assert!((want - got[i] as f64).abs() < 1e-5);
            }
        }
    }
}
