//! Bf16 linear layers of the CPU fast path.
//!
//! Weights are rounded to bfloat16 once (to nearest, ties to even), activations per row at run
//! time with the same rounding. AVX-512 BF16's `vdpbf16ps` multiplies pairs of bf16 values
//! (exactly: 8-bit significands) and adds each product to f32 accumulators; only the inputs
//! lose precision, not the sums. The portable twin performs the same additions in the
//! instruction's order with its denormal rules (inputs and results flushed to zero), so both
//! give the same bits, for any batch a row is part of and any thread count.
//!
//! Where `vdpbf16ps` is slow (on an Intel Xeon it computes half the products per second of
//! f32 FMAs: `examples/isa_rates.rs`) or missing, a third kernel (AVX-512F, or AVX2 and FMA
//! on CPUs without AVX-512) widens the bf16 values to f32 and adds the same products in the
//! same order with f32 FMAs. A product of two bf16 values
//! is exact in f32, so each FMA rounds like the instruction's addition; the denormal rules
//! cannot differ either when no input is subnormal and every product is a multiple of 2^-126
//! ([`fma_kernel_is_exact`]), which holds for any realistic layer and is checked per call
//! (otherwise the call runs on the other kernel). All three give the same bits.

#![allow(unsafe_code)] // SIMD kernel: target-feature dispatch and raw-pointer loads.

use std::cell::RefCell;
use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor};
use candle_nn::Linear;

use super::kernels;
use super::packed;

/// Output columns per packed panel (two 16-lane f32 vectors).
const NR: usize = super::packed::PANEL_COLUMNS;
/// Rows per register tile.
const MR: usize = super::packed::TILE_ROWS;
/// Values of `k` summed into one f32 lane per instruction (a bf16 pair).
const KG: usize = 2;

/// `x` rounded to bfloat16 (nearest, ties to even; NaN stays NaN), as its bits.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Replaces every weight by its bf16 value: the weights a bf16 model *is*, so that every
/// execution path (this one, the tensor path, a GPU) uses the same values.
pub fn fake_quantize(w: &mut [f32]) {
    for x in w {
        *x = from_bf16(to_bf16(*x));
    }
}

/// Makes `linear` a bf16 layer: its weight becomes [`fake_quantize`]d (for the tensor path)
/// and the packed bf16 weights for the fast path are returned.
pub(crate) fn quantize_linear(linear: &mut Linear) -> Result<Bf16Linear> {
    let w = linear.weight();
    let (n, k) = w.dims2()?;
    let mut host = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    fake_quantize(&mut host);
    let packed = Bf16Linear::pack(&host, k);
    let weight = Tensor::from_vec(host, (n, k), w.device())?.to_dtype(w.dtype())?;
    *linear = Linear::new(weight, linear.bias().cloned());
    Ok(packed)
}

/// The weights of one linear layer in bf16, packed for the kernel.
#[derive(Debug, Clone)]
pub(crate) struct Bf16Linear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of [`KG`].
    kp: usize,
    /// `[panel][k pair][column of the panel][KG]` bf16 bits, zero-padded in both directions.
    packed: Vec<u16>,
    /// The smallest biased exponent of a nonzero weight (255 when there is none).
    min_exponent: u32,
}

/// The biased exponent field of nonzero bf16 bits (0 for a subnormal), or 255 for a zero:
/// what the smallest nonzero magnitude of a set of values is found by.
#[inline(always)]
fn exponent_field(h: u16) -> u32 {
    if h & 0x7fff == 0 {
        255
    } else {
        u32::from((h >> 7) & 0xff)
    }
}

/// Whether f32 FMAs give `vdpbf16ps`'s bits on activations and weights whose smallest nonzero
/// magnitudes have the biased exponents `activations` and `weights`. A normal bf16 value with
/// exponent `e` is a multiple of `2^(e-7)`, so every product, every exact partial sum and every
/// rounding of one is a multiple of `2^(ea-7 + ew-7)`: at or above `2^-126`, no sum can be
/// subnormal and the flush-to-zero rules never apply.
fn fma_kernel_is_exact(activations: u32, weights: u32) -> bool {
    // (ea - 127 - 7) + (ew - 127 - 7) >= -126, with no subnormal input (field 0).
    activations >= 1 && weights >= 1 && activations + weights >= 142
}

impl Bf16Linear {
    /// Rounds and packs a PyTorch-layout `(n, k)` weight.
    pub fn pack(w: &[f32], k: usize) -> Self {
        let n = w.len() / k;
        let kp = k.next_multiple_of(KG);
        let mut packed = vec![0u16; n.div_ceil(NR) * NR * kp];
        for (j, row) in w.chunks(k).enumerate() {
            let base = (j / NR) * NR * kp;
            for (t, &v) in row.iter().enumerate() {
                packed[base + (t / KG) * NR * KG + (j % NR) * KG + t % KG] = to_bf16(v);
            }
        }
        let min_exponent = packed
            .iter()
            .map(|&h| exponent_field(h))
            .min()
            .unwrap_or(255);
        Self {
            n,
            k,
            kp,
            packed,
            min_exponent,
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
            buf.clear();
            buf.resize(m * kp, 0);
            kernels::round_rows_bf16(a, k, &mut buf, kp);
            if kernel.takes_widened() {
                let exact = WIDENED.with(|wide| {
                    let mut wide = wide.borrow_mut();
                    wide.clear();
                    wide.resize(m * kp, 0.0);
                    let min_exponent = widen_bf16(&buf, &mut wide);
                    let exact = fma_kernel_is_exact(min_exponent, self.min_exponent);
                    if exact {
                        self.for_each_tile(&wide, out, bias, |tile, out| {
                            kernel.run_widened(tile, out, n, accumulate)
                        });
                    }
                    exact
                });
                if exact {
                    return;
                }
            }
            let kernel = if kernel.takes_widened() {
                Kernel::without_fma()
            } else {
                kernel
            };
            self.for_each_tile(&buf, out, bias, |tile, out| {
                kernel.run(tile, out, n, accumulate)
            });
        });
    }

    /// Runs `f` on every register tile of the product of the activation rows `a` (`kp` wide)
    /// with the packed weights.
    fn for_each_tile<A>(
        &self,
        a: &[A],
        out: &mut [f32],
        bias: &[f32],
        mut f: impl FnMut(&Tile<A>, &mut [f32]),
    ) {
        let (n, kp) = (self.n, self.kp);
        let m = a.len() / kp;
        packed::for_each_tile(out, m, n, |t, out| {
            let tile = Tile {
                a: &a[t.r0 * kp..(t.r0 + t.rows) * kp],
                lda: kp,
                rows: t.rows,
                b: &self.packed[t.panel * NR * kp..(t.panel + 1) * NR * kp],
                groups: kp / KG,
                bias: &bias[t.j0..t.j0 + t.cols],
            };
            f(&tile, out);
        });
    }
}

thread_local! {
    /// Per-thread buffer of bf16 activation rows.
    static ACTIVATIONS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// The same rows as f32 values, for the FMA kernel.
    static WIDENED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One register tile's inputs: up to [`MR`] rows of activations (bf16 bits, or their f32
/// values for the FMA kernel) and one panel.
struct Tile<'a, A> {
    a: &'a [A],
    lda: usize,
    rows: usize,
    b: &'a [u16],
    groups: usize,
    /// The panel's bias (its length is the panel's column count).
    bias: &'a [f32],
}

impl<A> Tile<'_, A> {
    /// Checks the extents the SIMD kernels rely on.
    fn assert_bounds(&self, out: &[f32], ldo: usize) {
        assert!((1..=MR).contains(&self.rows));
        assert!(self.a.len() >= (self.rows - 1) * self.lda + self.groups * KG);
        assert!(self.b.len() >= self.groups * NR * KG);
        assert!(out.len() >= (self.rows - 1) * ldo + self.bias.len());
    }
}

/// Which tile kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
    /// AVX-512F: bf16 values widened to f32, f32 FMAs in `vdpbf16ps`'s order.
    Avx512F32,
    /// The same on AVX2 and FMA (CPUs without AVX-512).
    Avx2F32,
    /// Portable loops: the reference twin.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs (detected once; where both AVX-512 kernels run, see
    /// [`Kernel::dot_product_is_faster`]).
    fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") {
                if std::is_x86_feature_detected!("avx512bf16") && Self::dot_product_is_faster() {
                    return Kernel::Avx512Bf16;
                }
                return Kernel::Avx512F32;
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernel::Avx2F32;
            }
            Kernel::Portable
        })
    }

    /// Whether the kernel runs on widened activations ([`Kernel::run_widened`]).
    fn takes_widened(self) -> bool {
        matches!(self, Kernel::Avx512F32 | Kernel::Avx2F32)
    }

    /// What runs a call the FMA kernels cannot take exactly.
    fn without_fma() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16") {
            return Kernel::Avx512Bf16;
        }
        Kernel::Portable
    }

    /// Whether `vdpbf16ps` computes more products per cycle than f32 FMAs on this CPU: on AMD
    /// (Zen 4: the `vdpbf16ps` kernel ran at 2.1× `gemm`'s f32 rate), not on Intel (Emerald
    /// Rapids: half the f32 multiply-add rate, `examples/isa_rates.rs`). Decided by vendor, not
    /// by timing at start-up, which a busy machine can mislead; the two kernels give the same
    /// bits, so the choice is only about speed.
    #[cfg(target_arch = "x86_64")]
    fn dot_product_is_faster() -> bool {
        // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let leaf = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        vendor == b"AuthenticAMD"
    }
}

impl Kernel {
    /// `out[r·ldo + c] (+)= Σ_t a[r, t] · b[t, c] + bias[c]` for the tile's rows and the
    /// panel's columns, on bf16 activation bits.
    fn run(self, t: &Tile<u16>, out: &mut [f32], ldo: usize, accumulate: bool) {
        t.assert_bounds(out, ldo);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Bf16` is only chosen on CPUs with the features; the asserted
            // lengths bound every load and store.
            Kernel::Avx512Bf16 => unsafe {
                with_tile_rows!(t.rows, avx512::tile(t, out.as_mut_ptr(), ldo, accumulate))
            },
            _ => tile_portable(t, out, ldo, accumulate),
        }
    }

    /// As [`Kernel::run`], on widened activations (only the FMA kernels take them).
    fn run_widened(self, t: &Tile<f32>, out: &mut [f32], ldo: usize, accumulate: bool) {
        t.assert_bounds(out, ldo);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512F32` is only chosen on CPUs with AVX-512F; the asserted lengths
            // bound every load and store.
            Kernel::Avx512F32 => unsafe {
                with_tile_rows!(
                    t.rows,
                    avx512::tile_fma(t, out.as_mut_ptr(), ldo, accumulate)
                )
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2F32` is only chosen on CPUs with AVX2 and FMA; as above.
            Kernel::Avx2F32 => unsafe {
                with_tile_rows!(t.rows, avx2::tile_fma(t, out.as_mut_ptr(), ldo, accumulate))
            },
            _ => unreachable!("widened activations feed the FMA kernels"),
        }
    }
}

/// Writes the f32 values of the bf16 bits `src` to `dst` and returns the smallest biased
/// exponent of a nonzero one ([`exponent_field`]).
fn widen_bf16(src: &[u16], dst: &mut [f32]) -> u32 {
    let mut min_exponent = 255;
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = from_bf16(h);
        min_exponent = min_exponent.min(exponent_field(h));
    }
    min_exponent
}

/// The kernel this CPU runs bf16 projections on, and whether it is the portable twin.
pub(crate) fn cpu_kernel() -> (&'static str, bool) {
    match Kernel::detect() {
        Kernel::Avx512Bf16 => ("AVX-512 BF16 (vdpbf16ps)", false),
        Kernel::Avx512F32 => ("AVX-512F (f32 FMAs)", false),
        Kernel::Avx2F32 => ("AVX2 (f32 FMAs)", false),
        Kernel::Portable => ("portable (no AVX2 and FMA)", true),
    }
}

/// `x`, or zero of its sign when it is subnormal (the instruction's input and output rule).
#[inline(always)]
fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// The reference twin of the AVX-512 tile: per bf16 pair, the odd product then the even one
/// added to the f32 sum, each addition rounded, as `vdpbf16ps` specifies.
fn tile_portable(t: &Tile<u16>, out: &mut [f32], ldo: usize, accumulate: bool) {
    for r in 0..t.rows {
        let a = &t.a[r * t.lda..];
        for (c, o) in out[r * ldo..][..t.bias.len()].iter_mut().enumerate() {
            let mut sum = 0f32;
            for g in 0..t.groups {
                let b = &t.b[g * NR * KG + c * KG..][..KG];
                for i in [1, 0] {
                    let x = flush(from_bf16(a[g * KG + i]));
                    let w = flush(from_bf16(b[i]));
                    sum = flush(x.mul_add(w, sum));
                }
            }
            let v = sum + t.bias[c];
            *o = if accumulate { *o + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, KG, NR};
    use std::arch::x86_64::*;

    /// `R` rows × 32 columns with `vdpbf16ps`: per k pair, two 64-byte weight loads and a
    /// 4-byte broadcast per row feed `2R` dot-product instructions; the bias is added on the
    /// accumulators, stores are masked.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BF16; `t` holds `R` rows and `t.groups` k pairs; `out` has `R`
    /// rows `ldo` apart of at least the panel's columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile<const R: usize>(
        t: &Tile<u16>,
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
        for g in 0..t.groups {
            // SAFETY: within the caller's bounds.
            unsafe {
                let bp = b.add(g * NR * KG);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(NR).cast()));
                for r in 0..R {
                    let word = a.add(r * t.lda + g * KG).cast::<i32>().read_unaligned();
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(word));
                    lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
                    hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
                }
            }
        }
        // SAFETY: the caller's contract.
        unsafe { store(&lo, &hi, t.bias, out, ldo, accumulate) }
    }

    /// `R` rows × 32 columns with f32 FMAs on widened activations: per k pair, two 64-byte
    /// weight loads split into the odd and the even bf16 values of 32 columns (a mask and a
    /// shift), and per row two broadcasts feeding `4R` FMAs, the odd product first, as
    /// `vdpbf16ps` adds them.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `t` holds `R` rows and `t.groups` k pairs; `out` has `R` rows
    /// `ldo` apart of at least the panel's columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_fma<const R: usize>(
        t: &Tile<f32>,
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
        let high_half = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        for g in 0..t.groups {
            // SAFETY: within the caller's bounds.
            unsafe {
                let bp = b.add(g * NR * KG);
                let b0 = _mm512_loadu_si512(bp.cast());
                let b1 = _mm512_loadu_si512(bp.add(NR).cast());
                let odd0 = _mm512_castsi512_ps(_mm512_and_si512(b0, high_half));
                let even0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b0));
                let odd1 = _mm512_castsi512_ps(_mm512_and_si512(b1, high_half));
                let even1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b1));
                for r in 0..R {
                    let ap = a.add(r * t.lda + g * KG);
                    let odd = _mm512_set1_ps(ap.add(1).read());
                    let even = _mm512_set1_ps(ap.read());
                    lo[r] = _mm512_fmadd_ps(odd, odd0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(odd, odd1, hi[r]);
                    lo[r] = _mm512_fmadd_ps(even, even0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(even, even1, hi[r]);
                }
            }
        }
        // SAFETY: the caller's contract.
        unsafe { store(&lo, &hi, t.bias, out, ldo, accumulate) }
    }

    /// The epilogue of both tiles: the bias added to the sums, then to `out` when
    /// `accumulate`; masked stores of the panel's columns.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `out` has `R` rows `ldo` apart of at least `bias.len()` columns.
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize>(
        lo: &[__m512; R],
        hi: &[__m512; R],
        bias: &[f32],
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let half = NR / 2;
        let masks = crate::esm::packed::half_masks(bias.len());
        for (h, &mask) in masks.iter().enumerate() {
            if mask == 0 {
                continue;
            }
            let at = h * half;
            // SAFETY: the masked loads and stores touch only the panel's `n` columns.
            unsafe {
                let bias = _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(at));
                for r in 0..R {
                    let sum = if h == 0 { lo[r] } else { hi[r] };
                    let mut v = _mm512_add_ps(sum, bias);
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
    use super::{Tile, KG, NR};
    use std::arch::x86_64::*;

    /// Columns per 256-bit vector.
    const BLOCK: usize = 8;

    /// `R` rows × the panel's columns, eight at a time, with f32 FMAs on widened activations:
    /// per k pair, one 32-byte weight load split into the odd and the even bf16 values of
    /// eight columns, and per row two broadcasts feeding two FMAs, the odd product first, as
    /// `vdpbf16ps` adds them (AVX-512's [`super::avx512::tile_fma`] on 256-bit vectors).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `t` holds `R` rows and `t.groups` k pairs; `out` has `R` rows
    /// `ldo` apart of at least the panel's columns.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_fma<const R: usize>(
        t: &Tile<f32>,
        out: *mut f32,
        ldo: usize,
        accumulate: bool,
    ) {
        let n = t.bias.len();
        let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
        let high_half = _mm256_set1_epi32(0xffff_0000_u32 as i32);
        for block in 0..n.div_ceil(BLOCK) {
            let mut acc = [_mm256_setzero_ps(); R];
            for g in 0..t.groups {
                // SAFETY: within the caller's bounds.
                unsafe {
                    let w = _mm256_loadu_si256(b.add(g * NR * KG + block * BLOCK * KG).cast());
                    let odd_w = _mm256_castsi256_ps(_mm256_and_si256(w, high_half));
                    let even_w = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let ap = a.add(r * t.lda + g * KG);
                        *acc = _mm256_fmadd_ps(_mm256_set1_ps(ap.add(1).read()), odd_w, *acc);
                        *acc = _mm256_fmadd_ps(_mm256_set1_ps(ap.read()), even_w, *acc);
                    }
                }
            }
            let c0 = block * BLOCK;
            for (r, acc) in acc.iter().enumerate() {
                let mut sums = [0f32; BLOCK];
                // SAFETY: `sums` holds one 256-bit vector.
                unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), *acc) };
                for c in c0..(c0 + BLOCK).min(n) {
                    let v = sums[c - c0] + t.bias[c];
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

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even significand (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        for x in random(1000, 3) {
            let y = from_bf16(to_bf16(x));
            assert!((x - y).abs() <= x.abs() / 256.0, "{x} -> {y}");
        }
    }

    /// The SIMD kernels this CPU runs.
    fn simd_kernels() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            kernels.push(Kernel::Avx512F32);
            if std::is_x86_feature_detected!("avx512bf16") {
                kernels.push(Kernel::Avx512Bf16);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            kernels.push(Kernel::Avx2F32);
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
            Bf16Linear::pack(&c.w, c.k).forward_rows_with(
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
    fn the_fma_kernel_takes_realistic_values_and_refuses_tiny_ones() {
        let k = 64;
        let realistic = Bf16Linear::pack(&random(40 * k, 5), k);
        let mut bits = vec![0u16; 8 * k];
        kernels::round_rows_bf16(&random(8 * k, 6), k, &mut bits, k);
        let activations = widen_bf16(&bits, &mut vec![0f32; 8 * k]);
        assert!(fma_kernel_is_exact(activations, realistic.min_exponent));
        // 2^-20 · 2^-100: products far below 2^-126, or subnormal inputs: the other kernel runs.
        assert!(!fma_kernel_is_exact(
            exponent_field(to_bf16(2f32.powi(-20))),
            27
        ));
        assert!(!fma_kernel_is_exact(0, 254));
        // The boundary: exponents summing to 142 keep every product a multiple of 2^-126.
        assert!(fma_kernel_is_exact(71, 71) && !fma_kernel_is_exact(71, 70));
    }

    #[test]
    fn tiny_and_subnormal_values_give_the_twins_bits_on_every_kernel() {
        let (m, n, k) = (9, 40, 70);
        let tiny = |seed| -> Vec<f32> {
            random(m.max(n) * k, seed)
                .into_iter()
                .enumerate()
                .map(|(i, x)| match i % 5 {
                    0 => x * 1e-20,
                    1 => x * 1e-39, // subnormal
                    2 => -x * 1e-22,
                    _ => x,
                })
                .collect()
        };
        let a = tiny(11)[..m * k].to_vec();
        let w = tiny(12)[..n * k].to_vec();
        let bias = random(n, 13);
        let lin = Bf16Linear::pack(&w, k);
        let mut portable = vec![0f32; m * n];
        lin.forward_rows_with(Kernel::Portable, &mut portable, &a, &bias, false);
        for kernel in simd_kernels() {
            let mut simd = vec![0f32; m * n];
            lin.forward_rows_with(kernel, &mut simd, &a, &bias, false);
            assert_eq!(simd, portable, "{kernel:?}");
        }
    }

    /// `cargo test --release -p plm-model --lib bf16::tests::kernel_speeds -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand"]
    fn kernel_speeds() {
        let (_, k, n) = SPEED_SHAPE;
        let lin = Bf16Linear::pack(&random(n * k, 1), k);
        print_speeds(
            &simd_kernels(),
            Kernel::Portable,
            "GFLOP/s",
            |kernel, out, a, bias| lin.forward_rows_with(kernel, out, a, bias, false),
        );
        eprintln!("chosen: {:?}", Kernel::detect());
    }

    #[test]
    fn fake_quantized_weights_pack_to_the_same_bits() {
        let k = 48;
        let w = random(20 * k, 9);
        let mut fake = w.clone();
        fake_quantize(&mut fake);
        assert_eq!(
            Bf16Linear::pack(&w, k).packed,
            Bf16Linear::pack(&fake, k).packed
        );
    }
}
