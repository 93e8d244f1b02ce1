//! Int8 linear layers of the CPU fast path (W8A8).
//!
//! Weights are quantised once, symmetrically per output channel (±127); activations per row
//! at run time over the row's own range into `u8` (`x ≈ zero + scale · byte`, see
//! [`kernels::quantize_rows_u8`]), the operand order of AVX-512 VNNI's `vpdpbusd` (unsigned ×
//! signed bytes, four products summed into each i32 lane). The exact i32 sums are rescaled to
//! f32 with the row's zero point carried by a per-column term (`zero · Σ q`) and the bias.
//! CPUs without VNNI (AVX2 only: AMD Zen 2 and 3, Intel before Ice Lake) run an AVX2 kernel
//! that widens both operands to i16 and sums pairs with `vpmaddwd`; `vpmaddubsw` would be
//! faster but saturates its i16 pair sums (255 · 127 · 2 > 2¹⁵). Integer sums are exact and
//! the epilogue is one fixed sequence of f32 operations, so a row's result is the same on every
//! CPU (either SIMD kernel or the portable twin), for any batch it is part of and any thread
//! count.

#![allow(unsafe_code)] // SIMD kernel: target-feature dispatch and raw-pointer loads.

use std::cell::RefCell;
use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};
use candle_nn::Linear;

use super::kernels;
use super::packed;

/// Output columns per packed panel (two 16-lane i32 vectors).
const NR: usize = super::packed::PANEL_COLUMNS;
/// Rows per register tile.
const MR: usize = super::packed::TILE_ROWS;
/// Bytes of `k` summed into one i32 lane.
const KG: usize = 4;

/// Largest quantised magnitude.
const QMAX: f32 = 127.0;

/// Per-channel symmetric scale and rounded values of one row of weights.
fn quantize_row(row: &[f32], q: &mut [i8]) -> f32 {
    let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let scale = if max > 0.0 { max / QMAX } else { 1.0 };
    for (q, &x) in q.iter_mut().zip(row) {
        *q = (x / scale).round().clamp(-QMAX, QMAX) as i8;
    }
    scale
}

/// Replaces each row of a `(n, k)` weight by its int8 approximation `q · scale`: the weights
/// an int8 model *is*, so that every execution path (this one, the tensor path, a GPU) uses
/// the same values. Quantising the result again gives back the same `q` and scales.
pub fn fake_quantize(w: &mut [f32], k: usize) {
    let mut q = vec![0i8; k];
    for row in w.chunks_mut(k) {
        let scale = quantize_row(row, &mut q);
        for (x, &q) in row.iter_mut().zip(&q) {
            *x = f32::from(q) * scale;
        }
    }
}

/// Makes `linear` an int8 layer: its weight becomes [`fake_quantize`]d (for the tensor path)
/// and the packed int8 weights for the fast path are returned.
pub(crate) fn quantize_linear(linear: &mut Linear) -> Result<Int8Linear> {
    let w = linear.weight();
    let (n, k) = w.dims2()?;
    let mut host = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    fake_quantize(&mut host, k);
    let packed = Int8Linear::quantize(&host, k);
    let weight = Tensor::from_vec(host, (n, k), w.device())?.to_dtype(w.dtype())?;
    *linear = Linear::new(weight, linear.bias().cloned());
    Ok(packed)
}

/// The weights of one linear layer, quantised and packed for the kernel.
#[derive(Debug, Clone)]
pub(crate) struct Int8Linear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of [`KG`].
    kp: usize,
    /// `[panel][k group][column of the panel][KG]`, zero-padded in both directions.
    packed: Vec<i8>,
    /// Per output column: the weight scale.
    scales: Vec<f32>,
    /// Per output column: `Σ_k q`, which the activations' zero point multiplies.
    sums: Vec<f32>,
}

impl Int8Linear {
    /// Quantises a PyTorch-layout `(n, k)` weight per output channel.
    pub fn quantize(w: &[f32], k: usize) -> Self {
        let n = w.len() / k;
        let kp = k.next_multiple_of(KG);
        let panels = n.div_ceil(NR);
        let mut packed = vec![0i8; panels * NR * kp];
        let mut scales = vec![0f32; n];
        let mut sums = vec![0f32; n];
        let mut q = vec![0i8; k];
        for (j, row) in w.chunks(k).enumerate() {
            scales[j] = quantize_row(row, &mut q);
            // Exact: |Σ q| ≤ 127 · k is far below 2²⁴.
            sums[j] = q.iter().map(|&v| i32::from(v)).sum::<i32>() as f32;
            let (panel, col) = (j / NR, j % NR);
            let base = panel * NR * kp;
            for (t, &v) in q.iter().enumerate() {
                packed[base + (t / KG) * NR * KG + col * KG + t % KG] = v;
            }
        }
        Self {
            n,
            k,
            kp,
            packed,
            scales,
            sums,
        }
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `out (+)= a · Wᵀ + bias` for the row-major rows `a` `(m, k)`: `out` is overwritten
    /// unless `accumulate`, when the product and bias are added to it. Runs on the calling
    /// thread (callers split rows across tasks).
    pub fn forward_rows(&self, out: &mut [f32], a: &[f32], bias: &[f32], accumulate: bool) {
        self.forward_rows_with(Kernel::detect(), out, a, bias, accumulate);
    }

    fn forward_rows_with(
        &self,
        kernel: Kernel,
        out: &mut [f32],
        a: &[f32],
        bias: &[f32],
        accumulate: bool,
    ) {
        let (n, k, kp) = (self.n, self.k, self.kp);
        let m = a.len() / k;
        assert_eq!(out.len(), m * n, "output size");
        assert_eq!(bias.len(), n, "bias size");
        ACTIVATIONS.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.quantize(a, m, k, kp);
            let widened = kernel == Kernel::Avx2;
            if widened {
                buf.widen();
            }
            let (aq, wide, row_scales, row_zeros) =
                (&buf.bytes, &buf.wide, &buf.scales, &buf.zeros);
            packed::for_each_tile(out, m, n, |t, out| {
                let columns = Columns {
                    sums: &self.sums[t.j0..t.j0 + t.cols],
                    scales: &self.scales[t.j0..t.j0 + t.cols],
                    bias: &bias[t.j0..t.j0 + t.cols],
                };
                let tile = Tile {
                    a: &aq[t.r0 * kp..(t.r0 + t.rows) * kp],
                    wide: if widened {
                        &wide[t.r0 * kp..(t.r0 + t.rows) * kp]
                    } else {
                        &[]
                    },
                    lda: kp,
                    b: &self.packed[t.panel * NR * kp..(t.panel + 1) * NR * kp],
                    groups: kp / KG,
                    row_scales: &row_scales[t.r0..t.r0 + t.rows],
                    row_zeros: &row_zeros[t.r0..t.r0 + t.rows],
                };
                kernel.run(&tile, &columns, out, n, accumulate);
            });
        });
    }
}

/// One register tile's inputs: up to [`MR`] rows of quantised activations and one panel.
struct Tile<'a> {
    a: &'a [u8],
    /// The same bytes widened to i16 (for the AVX2 kernel; empty for the others).
    wide: &'a [i16],
    lda: usize,
    b: &'a [i8],
    groups: usize,
    row_scales: &'a [f32],
    row_zeros: &'a [f32],
}

/// The per-column terms of a panel's epilogue (up to [`NR`] columns).
struct Columns<'a> {
    sums: &'a [f32],
    scales: &'a [f32],
    bias: &'a [f32],
}

/// The dequantised value of one output element, `Σ (zero + row_scale · a) · scale · q + bias`;
/// both kernels evaluate exactly this sequence (no fused multiply-add), so they agree to the
/// bit.
#[inline(always)]
fn dequantize(sum: i32, q_sum: f32, row: (f32, f32), scale: f32, bias: f32) -> f32 {
    let (row_scale, row_zero) = row;
    (sum as f32 * row_scale + row_zero * q_sum) * scale + bias
}

/// Which tile kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 VNNI with the epilogue in registers.
    Vnni,
    /// AVX2: i16-widened bytes, `vpmaddwd`.
    Avx2,
    /// Portable loops: the reference twin.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs (detected once).
    fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                return Kernel::Vnni;
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
            Kernel::Portable
        })
    }

    /// `out[r·ldo + c] (+)= dequantize(Σ_t a[r, t] · b[t, c])` for the tile's rows and the
    /// panel's columns.
    fn run(self, t: &Tile, cols: &Columns, out: &mut [f32], ldo: usize, accumulate: bool) {
        let rows = t.row_scales.len();
        assert!((1..=MR).contains(&rows));
        assert!(t.a.len() >= (rows - 1) * t.lda + t.groups * KG);
        assert!(t.b.len() >= t.groups * NR * KG);
        assert!(out.len() >= (rows - 1) * ldo + cols.bias.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Vnni` is only detected on CPUs with the features; the asserted lengths
            // bound every load and store.
            Kernel::Vnni => unsafe {
                with_tile_rows!(rows, vnni::tile(t, cols, out.as_mut_ptr(), ldo, accumulate))
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only chosen on CPUs with AVX2, with the widened rows present;
            // the asserted lengths bound every load and store.
            Kernel::Avx2 => unsafe {
                assert!(t.wide.len() >= (rows - 1) * t.lda + t.groups * KG);
                with_tile_rows!(rows, avx2::tile(t, cols, out.as_mut_ptr(), ldo, accumulate))
            },
            _ => tile_portable(t, cols, out, ldo, accumulate),
        }
    }
}

/// The kernel this CPU runs int8 projections on, and whether it is the portable twin.
pub(crate) fn cpu_kernel() -> (&'static str, bool) {
    match Kernel::detect() {
        Kernel::Vnni => ("AVX-512 VNNI", false),
        Kernel::Avx2 => ("AVX2 (vpmaddwd)", false),
        Kernel::Portable => ("portable (no AVX2)", true),
    }
}

/// Per-thread buffers of quantised activation rows.
#[derive(Default)]
struct ActivationBuffer {
    bytes: Vec<u8>,
    /// `bytes` as i16, filled by [`ActivationBuffer::widen`] for the kernel that reads it.
    wide: Vec<i16>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

impl ActivationBuffer {
    /// Quantises `m` rows of `a` per row into `u8` (see [`kernels::quantize_rows_u8`]), rows
    /// `kp` bytes apart with the tail zero (the packed weights are zero there too), with each
    /// row's scale and zero point.
    fn quantize(&mut self, a: &[f32], m: usize, k: usize, kp: usize) {
        self.bytes.clear();
        self.bytes.resize(m * kp, 0);
        self.scales.clear();
        self.scales.resize(m, 0.0);
        self.zeros.clear();
        self.zeros.resize(m, 0.0);
        kernels::quantize_rows_u8(a, k, &mut self.bytes, kp, &mut self.scales, &mut self.zeros);
    }

    /// Fills `wide` with the quantised bytes as i16 (the AVX2 kernel's operands).
    fn widen(&mut self) {
        self.wide.clear();
        self.wide.extend(self.bytes.iter().map(|&b| i16::from(b)));
    }
}

thread_local! {
    static ACTIVATIONS: RefCell<ActivationBuffer> = RefCell::new(ActivationBuffer::default());
}

/// The reference twin of the VNNI tile: the same sums and epilogue, in portable code.
fn tile_portable(t: &Tile, cols: &Columns, out: &mut [f32], ldo: usize, accumulate: bool) {
    for (r, row) in t
        .row_scales
        .iter()
        .copied()
        .zip(t.row_zeros.iter().copied())
        .enumerate()
    {
        let a = &t.a[r * t.lda..];
        for (c, o) in out[r * ldo..][..cols.bias.len()].iter_mut().enumerate() {
            let mut sum = 0i32;
            for g in 0..t.groups {
                let av = &a[g * KG..][..KG];
                let bv = &t.b[g * NR * KG + c * KG..][..KG];
                sum += av
                    .iter()
                    .zip(bv)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum::<i32>();
            }
            let v = dequantize(sum, cols.sums[c], row, cols.scales[c], cols.bias[c]);
            *o = if accumulate { *o + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Columns, Tile, KG, NR};
    use std::arch::x86_64::*;

    /// `R` rows × 32 columns with `vpdpbusd`: per k-group, two 64-byte weight loads and a
    /// 4-byte broadcast per row feed `2R` dot-product instructions; the epilogue
    /// ([`super::dequantize`]) runs on the accumulators with masked stores.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `t` holds `R` rows and `t.groups` k-groups; `out` has
    /// `R` rows `ldo` apart of at least `cols` columns.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize>(
        t: &Tile,
        cols: &Columns,
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let mut lo = [_mm512_setzero_si512(); R];
        let mut hi = [_mm512_setzero_si512(); R];
        let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
        for g in 0..t.groups {
            // SAFETY: within the caller's bounds.
            unsafe {
                let bp = b.add(g * NR * KG);
                let b0 = _mm512_loadu_si512(bp.cast());
                let b1 = _mm512_loadu_si512(bp.add(NR * KG / 2).cast());
                for r in 0..R {
                    let word = a.add(r * t.lda + g * KG).cast::<i32>().read_unaligned();
                    let av = _mm512_set1_epi32(word);
                    lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                    hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
                }
            }
        }
        let half = NR / 2;
        let masks = crate::esm::packed::half_masks(cols.bias.len());
        for (h, &mask) in masks.iter().enumerate() {
            if mask == 0 {
                continue;
            }
            let at = h * half;
            // SAFETY: the masked loads and stores touch only the panel's `n` columns.
            unsafe {
                let sums = _mm512_maskz_loadu_ps(mask, cols.sums.as_ptr().add(at));
                let scales = _mm512_maskz_loadu_ps(mask, cols.scales.as_ptr().add(at));
                let bias = _mm512_maskz_loadu_ps(mask, cols.bias.as_ptr().add(at));
                for r in 0..R {
                    let sum = if h == 0 { lo[r] } else { hi[r] };
                    // [`super::dequantize`], operation by operation.
                    let scaled =
                        _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(t.row_scales[r]));
                    let shift = _mm512_mul_ps(_mm512_set1_ps(t.row_zeros[r]), sums);
                    let row = _mm512_mul_ps(_mm512_add_ps(scaled, shift), scales);
                    let mut v = _mm512_add_ps(row, bias);
                    let dst = out.add(r * ldo + at);
                    if accumulate {
                        v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), v);
                    }
                    _mm512_mask_storeu_ps(dst, mask, v);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Columns, Tile, KG, NR};
    use std::arch::x86_64::*;

    /// Columns per 256-bit block: four columns × [`KG`] i16 weights.
    const BLOCK: usize = 4;

    /// `R` rows × the panel's columns, four at a time with `vpmaddwd`: per k-group, one
    /// 16-byte weight load widened to i16 and per row an 8-byte broadcast of the widened
    /// activations feed one multiply-add into lanes `2c` and `2c + 1` of column `c`, whose sum
    /// is the column's; the epilogue is [`super::dequantize`].
    ///
    /// # Safety
    /// The CPU has AVX2; `t` holds `R` rows of widened activations and `t.groups` k-groups;
    /// `out` has `R` rows `ldo` apart of at least `cols` columns.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile<const R: usize>(
        t: &Tile,
        cols: &Columns,
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let n = cols.bias.len();
        let (a, b) = (t.wide.as_ptr(), t.b.as_ptr());
        for block in 0..n.div_ceil(BLOCK) {
            let mut acc = [_mm256_setzero_si256(); R];
            for g in 0..t.groups {
                // SAFETY: within the caller's bounds.
                unsafe {
                    let bp = b.add(g * NR * KG + block * BLOCK * KG);
                    let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let word = a.add(r * t.lda + g * KG).cast::<i64>().read_unaligned();
                        let av = _mm256_set1_epi64x(word);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(av, w));
                    }
                }
            }
            let c0 = block * BLOCK;
            for (r, acc) in acc.iter().enumerate() {
                let mut lanes = [0i32; 2 * BLOCK];
                // SAFETY: `lanes` holds one 256-bit vector.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *acc) };
                let row = (t.row_scales[r], t.row_zeros[r]);
                for c in c0..(c0 + BLOCK).min(n) {
                    let sum = lanes[2 * (c - c0)] + lanes[2 * (c - c0) + 1];
                    let v = super::dequantize(sum, cols.sums[c], row, cols.scales[c], cols.bias[c]);
                    // SAFETY: row `r`, column `c` of the caller's `out`.
                    unsafe {
                        let dst = out.add(r * ldo + c);
                        *dst = if accumulate { *dst + v } else { v };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esm::packed::test_support::{assert_twins, print_speeds, random, SPEED_SHAPE};

    /// The SIMD kernels this CPU runs.
    fn simd_kernels() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if Kernel::detect() == Kernel::Vnni {
                kernels.push(Kernel::Vnni);
            }
            if std::is_x86_feature_detected!("avx2") {
                kernels.push(Kernel::Avx2);
            }
        }
        if kernels.is_empty() {
            eprintln!("no AVX2 on this CPU: only the portable kernel runs");
        }
        kernels
    }

    #[test]
    fn the_simd_kernels_give_the_bits_of_their_portable_twin() {
        assert_twins(&simd_kernels(), Kernel::Portable, |kernel, c| {
            let mut out = c.start.clone();
            Int8Linear::quantize(&c.w, c.k).forward_rows_with(
                kernel,
                &mut out,
                &c.a,
                &c.bias,
                c.accumulate,
            );
            out
        });
    }

    #[test]
    #[ignore = "timing, run by hand"]
    fn kernel_speeds() {
        let (_, k, n) = SPEED_SHAPE;
        let lin = Int8Linear::quantize(&random(n * k, 1), k);
        print_speeds(
            &simd_kernels(),
            Kernel::Portable,
            "G int ops/s",
            |kernel, out, a, bias| lin.forward_rows_with(kernel, out, a, bias, false),
        );
        eprintln!("chosen: {:?}", Kernel::detect());
    }

    #[test]
    fn fake_quantized_weights_quantize_to_the_same_integers() {
        let k = 48;
        let w = random(20 * k, 9);
        let mut fake = w.clone();
        fake_quantize(&mut fake, k);
        let (a, b) = (Int8Linear::quantize(&w, k), Int8Linear::quantize(&fake, k));
        assert_eq!(a.packed, b.packed);
        for (x, y) in a.scales.iter().zip(&b.scales) {
            assert!((x - y).abs() <= 1e-6 * x.abs());
        }
    }
}
