//! The low-precision projections of a block for the CPU fast path, whichever precision the
//! model is installed at ([`crate::Precision`]): int8 ([`super::int8`]) or bf16
//! ([`super::bf16`]). Packing also rounds the layer's own weights, so every execution path
//! computes with the model's values.

use candle_core::Result;
use candle_nn::Linear;

use super::bf16::{self, Bf16Linear};
use super::int8::{self, Int8Linear};
use crate::Precision;

/// Output columns per packed panel (two 16-lane vectors), in both kernels.
pub(crate) const PANEL_COLUMNS: usize = 32;
/// Rows per register tile, in both kernels.
pub(crate) const TILE_ROWS: usize = 8;

/// Where one register tile lies in a row-major `(m, n)` output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TileSpan {
    /// Panel index (columns `panel·PANEL_COLUMNS ..`).
    pub panel: usize,
    /// First column.
    pub j0: usize,
    /// Columns (at most [`PANEL_COLUMNS`]).
    pub cols: usize,
    /// First row.
    pub r0: usize,
    /// Rows (at most [`TILE_ROWS`]).
    pub rows: usize,
}

/// Walks the register tiles of a row-major `(m, n)` output panel by panel, row block by row
/// block (both kernels' order), passing each tile's span and the slice of `out` from its first
/// to its last element (row stride `n`).
pub(crate) fn for_each_tile(
    out: &mut [f32],
    m: usize,
    n: usize,
    mut tile: impl FnMut(TileSpan, &mut [f32]),
) {
    for panel in 0..n.div_ceil(PANEL_COLUMNS) {
        let j0 = panel * PANEL_COLUMNS;
        let cols = PANEL_COLUMNS.min(n - j0);
        for r0 in (0..m).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(m - r0);
            let span = TileSpan {
                panel,
                j0,
                cols,
                r0,
                rows,
            };
            tile(span, &mut out[r0 * n + j0..(r0 + rows - 1) * n + j0 + cols]);
        }
    }
}

/// Write masks of the two 16-lane halves of a 32-column panel holding `n` columns (both
/// kernels' epilogues).
pub(crate) fn half_masks(n: usize) -> [u16; 2] {
    let half = |n: usize| {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        }
    };
    [half(n), half(n.saturating_sub(16))]
}

/// Which CPU kernel runs the projections of a model at `precision`: `None` for f32 (`gemm`,
/// fast on any x86-64), else the kernel's name and whether it is the portable twin, which gives
/// the same bits tens to hundreds of times more slowly than the SIMD kernels (bf16's: 0.3
/// against 130 GFLOP/s per core on an Intel Xeon), so a server can say so when it loads such
/// a model. Every x86-64 CPU with AVX2 (and FMA, for bf16) has a SIMD kernel.
pub fn cpu_kernel(precision: Precision) -> Option<(&'static str, bool)> {
    match precision {
        Precision::F32 => None,
        Precision::Int8 => Some(int8::cpu_kernel()),
        Precision::Bf16 => Some(bf16::cpu_kernel()),
    }
}

/// One projection's packed weights.
#[derive(Debug, Clone)]
pub(crate) enum PackedLinear {
    Int8(Int8Linear),
    Bf16(Bf16Linear),
}

impl PackedLinear {
    /// Rounds `linear`'s weight to `precision` and packs it; `None` for f32.
    pub fn pack(linear: &mut Linear, precision: Precision) -> Result<Option<Self>> {
        Ok(match precision {
            Precision::F32 => None,
            Precision::Int8 => Some(Self::Int8(int8::quantize_linear(linear)?)),
            Precision::Bf16 => Some(Self::Bf16(bf16::quantize_linear(linear)?)),
        })
    }

    /// Packs a PyTorch-layout `(n, k)` f32 weight at `precision` (`None` for f32).
    #[cfg(test)]
    fn from_weights(w: &[f32], k: usize, precision: Precision) -> Option<Self> {
        match precision {
            Precision::F32 => None,
            Precision::Int8 => Some(Self::Int8(Int8Linear::quantize(w, k))),
            Precision::Bf16 => Some(Self::Bf16(Bf16Linear::pack(w, k))),
        }
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        match self {
            Self::Int8(w) => w.out_features(),
            Self::Bf16(w) => w.out_features(),
        }
    }

    /// `out (+)= a · Wᵀ + bias` on the calling thread (see [`Int8Linear::forward_rows`]).
    pub fn forward_rows(&self, out: &mut [f32], a: &[f32], bias: &[f32], accumulate: bool) {
        match self {
            Self::Int8(w) => w.forward_rows(out, a, bias, accumulate),
            Self::Bf16(w) => w.forward_rows(out, a, bias, accumulate),
        }
    }
}

/// The packed projections of one transformer block.
#[derive(Debug, Clone)]
pub(crate) struct PackedBlock {
    /// Stacked query, key and value projections.
    pub qkv: PackedLinear,
    /// Attention output projection.
    pub out: PackedLinear,
    /// First feed-forward projection.
    pub ff1: PackedLinear,
    /// Second feed-forward projection.
    pub ff2: PackedLinear,
}

/// Test data shared by the int8 and bf16 kernels' tests.
#[cfg(test)]
pub(super) mod test_support {
    use rand::{Rng, SeedableRng};

    /// `len` values uniform in [-1, 1), reproducibly from `seed`.
    pub fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// One product on which a SIMD tile must give its portable twin's bits.
    pub struct TwinCase {
        pub a: Vec<f32>,
        pub w: Vec<f32>,
        pub bias: Vec<f32>,
        /// The output's previous contents (read when `accumulate`).
        pub start: Vec<f32>,
        pub k: usize,
        pub accumulate: bool,
        pub name: String,
    }

    /// `(m, k, n)` of the kernel-speed benchmarks (the 35M feed-forward shape).
    pub const SPEED_SHAPE: (usize, usize, usize) = (512, 480, 1920);

    /// Five timings of `calls` runs of `run`, each a [`SPEED_SHAPE`] product, in G operations
    /// (multiplies and adds) per second.
    pub fn speeds(calls: usize, mut run: impl FnMut()) -> Vec<f64> {
        let (m, k, n) = SPEED_SHAPE;
        let g_ops = 2.0 * (m * n * k) as f64 / 1e9;
        (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..calls {
                    run();
                }
                calls as f64 * g_ops / start.elapsed().as_secs_f64()
            })
            .collect()
    }

    /// Prints the [`speeds`] of each of `kernels` and then of `portable` (run once per timing,
    /// the others ten times) on a [`SPEED_SHAPE`] product; `product(kernel, out, a, bias)`
    /// computes `out = a · Wᵀ + bias` on that kernel. For kernel-speed tests run by hand.
    pub fn print_speeds<K: std::fmt::Debug + Copy + PartialEq>(
        kernels: &[K],
        portable: K,
        unit: &str,
        mut product: impl FnMut(K, &mut [f32], &[f32], &[f32]),
    ) {
        let (m, k, n) = SPEED_SHAPE;
        let a = random(m * k, 2);
        let bias = vec![0f32; n];
        let mut out = vec![0f32; m * n];
        for &kernel in kernels.iter().chain([&portable]) {
            let calls = if kernel == portable { 1 } else { 10 };
            let rates = speeds(calls, || product(kernel, &mut out, &a, &bias));
            eprintln!("{kernel:?}: {rates:.1?} {unit} (one thread)");
        }
    }

    /// Asserts that each of `kernels` gives `portable`'s bits on every one of [`twin_cases`];
    /// `product(kernel, case)` returns the case's output on that kernel.
    pub fn assert_twins<K: std::fmt::Debug + Copy>(
        kernels: &[K],
        portable: K,
        product: impl Fn(K, &TwinCase) -> Vec<f32>,
    ) {
        for c in twin_cases() {
            let want = product(portable, &c);
            for &kernel in kernels {
                assert_eq!(product(kernel, &c), want, "{kernel:?} {}", c.name);
            }
        }
    }

    /// Shapes from one element to several panels and tiles with ragged edges, overwriting and
    /// accumulating.
    pub fn twin_cases() -> Vec<TwinCase> {
        let shapes = [
            (1, 1, 1, 1),
            (7, 33, 5, 2),
            (8, 32, 480, 3),
            (19, 70, 1283, 4),
        ];
        let mut cases = Vec::new();
        for (m, n, k, seed) in shapes {
            for accumulate in [false, true] {
                cases.push(TwinCase {
                    a: random(m * k, seed),
                    w: random(n * k, seed + 9),
                    bias: random(n, seed),
                    start: random(m * n, seed + 20),
                    k,
                    accumulate,
                    name: format!("({m},{n},{k}) accumulate {accumulate}"),
                });
            }
        }
        cases
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::random;
    use super::*;

    const LOW: [Precision; 2] = [Precision::Int8, Precision::Bf16];

    fn packed(w: &[f32], k: usize, precision: Precision) -> PackedLinear {
        PackedLinear::from_weights(w, k, precision).expect("a low precision")
    }

    #[test]
    fn the_portable_kernels_are_reported_only_where_the_simd_ones_cannot_run() {
        assert_eq!(cpu_kernel(Precision::F32), None);
        let (int8_simd, bf16_simd) = {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = std::is_x86_feature_detected!("avx2");
                let fma = avx2 && std::is_x86_feature_detected!("fma");
                (avx2, fma || std::is_x86_feature_detected!("avx512f"))
            }
            #[cfg(not(target_arch = "x86_64"))]
            (false, false)
        };
        let int8 = cpu_kernel(Precision::Int8).expect("int8 has a kernel");
        let bf16 = cpu_kernel(Precision::Bf16).expect("bf16 has a kernel");
        assert_eq!(int8.1, !int8_simd, "{int8:?}");
        assert_eq!(bf16.1, !bf16_simd, "{bf16:?}");
    }

    #[test]
    fn masks_cover_exactly_the_panel_columns() {
        assert_eq!(half_masks(0), [0, 0]);
        assert_eq!(half_masks(1), [1, 0]);
        assert_eq!(half_masks(16), [0xffff, 0]);
        assert_eq!(half_masks(17), [0xffff, 1]);
        assert_eq!(half_masks(32), [0xffff, 0xffff]);
    }

    #[test]
    fn the_product_is_close_to_the_f32_one_for_any_shape() {
        for precision in LOW {
            // Two roundings over k products of size ≤ 1: half an int8 step (1/254 of the row's
            // largest value) or 2^-9 relative for bf16.
            let per_sqrt_k = if precision == Precision::Int8 {
                0.02
            } else {
                0.006
            };
            for (m, n, k, seed) in [
                (1, 5, 3, 1),
                (9, 33, 17, 2),
                (40, 64, 320, 3),
                (17, 96, 1280, 4),
            ] {
                let (a, w, bias) = (random(m * k, seed), random(n * k, seed + 10), random(n, 0));
                let lin = packed(&w, k, precision);
                assert_eq!(lin.out_features(), n);
                let mut out = vec![0f32; m * n];
                lin.forward_rows(&mut out, &a, &bias, false);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f32 = (0..k).map(|t| a[i * k + t] * w[j * k + t]).sum();
                        let got = out[i * n + j] - bias[j];
                        let bound = per_sqrt_k * (k as f32).sqrt() + 1e-3;
                        assert!(
                            (got - exact).abs() < bound,
                            "{precision:?} ({m},{n},{k}) [{i},{j}]: {got} vs {exact}"
                        );
                    }
                }
                let mut acc = out.clone();
                lin.forward_rows(&mut acc, &a, &bias, true);
                for (x, y) in acc.iter().zip(&out) {
                    assert_eq!(*x, 2.0 * y, "{precision:?}");
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_or_in_a_batch() {
        let (m, n, k) = (11, 40, 64);
        let (a, w, bias) = (random(m * k, 5), random(n * k, 6), random(n, 7));
        for precision in LOW {
            let lin = packed(&w, k, precision);
            let mut batch = vec![0f32; m * n];
            lin.forward_rows(&mut batch, &a, &bias, false);
            for i in 0..m {
                let mut alone = vec![0f32; n];
                lin.forward_rows(&mut alone, &a[i * k..(i + 1) * k], &bias, false);
                assert_eq!(alone, batch[i * n..(i + 1) * n], "{precision:?} row {i}");
            }
        }
    }

    /// `cargo test --release -p plm-model --lib packed::tests::speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand"]
    #[allow(unsafe_code)] // The raw-pointer f32 GEMM it compares with.
    fn speed_against_f32_gemm() {
        let (m, k, n) = (512usize, 480usize, 1920usize);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bias = vec![0f32; n];
        let mut out = vec![0f32; m * n];
        let reps = 20;
        let gflop = 2.0 * (m * n * k) as f64 / 1e9;
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            gflop * reps as f64 / t.elapsed().as_secs_f64()
        };
        let f32_rate = time(&mut || {
            // SAFETY: extents as allocated above.
            unsafe {
                super::super::kernels::matmul_strided(
                    (m, n, k),
                    (out.as_mut_ptr(), n, 1),
                    (a.as_ptr(), k, 1),
                    (w.as_ptr(), 1, k),
                );
            }
        });
        for precision in LOW {
            let lin = packed(&w, k, precision);
            let rate = time(&mut || lin.forward_rows(&mut out, &a, &bias, false));
            eprintln!(
                "{precision:?}: {rate:.1} G(FL)OP/s against f32 gemm {f32_rate:.1} (one thread)"
            );
        }
    }
}
