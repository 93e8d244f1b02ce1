//! Bf16 linear layers of the CPU fast path.
//!
//! Weights are rounded to bfloat16 once (to nearest, ties to even), activations per row at run
//! time with the same rounding. AVX-512 BF16's `vdpbf16ps` multiplies pairs of bf16 values
//! (exactly: 8-bit significands) and adds each product to f32 accumulators, twice the
//! multiply rate of f32 FMAs; only the inputs lose precision, not the sums. The portable twin
//! performs the same additions in the instruction's order with its denormal rules (inputs and
//! results flushed to zero), so both give the same bits, for any batch a row is part of and
//! any thread count.

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
        Self { n, k, kp, packed }
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
            packed::for_each_tile(out, m, n, |t, out| {
                let tile = Tile {
                    a: &buf[t.r0 * kp..(t.r0 + t.rows) * kp],
                    lda: kp,
                    rows: t.rows,
                    b: &self.packed[t.panel * NR * kp..(t.panel + 1) * NR * kp],
                    groups: kp / KG,
                    bias: &bias[t.j0..t.j0 + t.cols],
                };
                kernel.run(&tile, out, n, accumulate);
            });
        });
    }
}

thread_local! {
    /// Per-thread buffer of bf16 activation rows.
    static ACTIVATIONS: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// One register tile's inputs: up to [`MR`] rows of bf16 activations and one panel.
struct Tile<'a> {
    a: &'a [u16],
    lda: usize,
    rows: usize,
    b: &'a [u16],
    groups: usize,
    /// The panel's bias (its length is the panel's column count).
    bias: &'a [f32],
}

/// Which tile kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
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
                && std::is_x86_feature_detected!("avx512bf16")
            {
                return Kernel::Avx512Bf16;
            }
            Kernel::Portable
        })
    }

    /// `out[r·ldo + c] (+)= Σ_t a[r, t] · b[t, c] + bias[c]` for the tile's rows and the
    /// panel's columns.
    fn run(self, t: &Tile, out: &mut [f32], ldo: usize, accumulate: bool) {
        assert!((1..=MR).contains(&t.rows));
        assert!(t.a.len() >= (t.rows - 1) * t.lda + t.groups * KG);
        assert!(t.b.len() >= t.groups * NR * KG);
        assert!(out.len() >= (t.rows - 1) * ldo + t.bias.len());
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Bf16` is only detected on CPUs with the features; the asserted
            // lengths bound every load and store.
            Kernel::Avx512Bf16 => unsafe {
                let o = out.as_mut_ptr();
                match t.rows {
                    8 => avx512::tile::<8>(t, o, ldo, accumulate),
                    7 => avx512::tile::<7>(t, o, ldo, accumulate),
                    6 => avx512::tile::<6>(t, o, ldo, accumulate),
                    5 => avx512::tile::<5>(t, o, ldo, accumulate),
                    4 => avx512::tile::<4>(t, o, ldo, accumulate),
                    3 => avx512::tile::<3>(t, o, ldo, accumulate),
                    2 => avx512::tile::<2>(t, o, ldo, accumulate),
                    _ => avx512::tile::<1>(t, o, ldo, accumulate),
                }
            },
            _ => tile_portable(t, out, ldo, accumulate),
        }
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
fn tile_portable(t: &Tile, out: &mut [f32], ldo: usize, accumulate: bool) {
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
        t: &Tile,
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
        let half = NR / 2;
        let masks = crate::esm::packed::half_masks(t.bias.len());
        for (h, &mask) in masks.iter().enumerate() {
            if mask == 0 {
                continue;
            }
            let at = h * half;
            // SAFETY: the masked loads and stores touch only the panel's `n` columns.
            unsafe {
                let bias = _mm512_maskz_loadu_ps(mask, t.bias.as_ptr().add(at));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esm::packed::test_support::{random, twin_cases};

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

    #[test]
    fn the_avx512_kernel_gives_the_bits_of_its_portable_twin() {
        if Kernel::detect() != Kernel::Avx512Bf16 {
            eprintln!("no AVX-512 BF16 on this CPU: only the portable kernel runs");
            return;
        }
        for c in twin_cases() {
            let lin = Bf16Linear::pack(&c.w, c.k);
            let (mut simd, mut portable) = (c.start.clone(), c.start);
            lin.forward_rows_with(Kernel::Avx512Bf16, &mut simd, &c.a, &c.bias, c.accumulate);
            lin.forward_rows_with(Kernel::Portable, &mut portable, &c.a, &c.bias, c.accumulate);
            assert_eq!(simd, portable, "{}", c.name);
        }
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
