//! Issue rates of the three multiply-add instructions the engine's kernels are built on, on one
//! core: `vfmadd231ps` (f32), `vdpbf16ps` (bf16 pairs) and `vpdpbusd` (int8 quadruples), all on
//! 512-bit registers with twelve independent accumulators (enough to hide their latencies).
//!
//! ```text
//! cargo run --release --example isa_rates -p plm-model [-- ROUNDS]
//! ```
//!
//! Which precision is fastest depends on the CPU, not only on the width of its numbers: on
//! an Intel Xeon (Emerald Rapids) `vdpbf16ps` issues at a quarter of the f32 rate, so a bf16
//! model computes fewer products per second than the f32 one (`docs/BENCHMARKS.md`).

#![allow(unsafe_code)] // target-feature functions and their dispatch, as in the engine's kernels.

#[cfg(target_arch = "x86_64")]
mod rates {
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::Instant;

    /// Instructions per call of each loop.
    pub const INSTRUCTIONS: usize = 240_000_000;
    const ACCUMULATORS: usize = 12;

    #[target_feature(enable = "avx512f")]
    unsafe fn f32_fma() -> f32 {
        let a = _mm512_set1_ps(black_box(1.000_000_1));
        let b = _mm512_set1_ps(black_box(0.999_999_9));
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..INSTRUCTIONS / ACCUMULATORS {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(a, b, *r);
            }
        }
        acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn bf16_pairs() -> f32 {
        // SAFETY: 32 bf16 lanes have the size and layout of 32 i16 lanes.
        let one: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(black_box(0x3f80))) };
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        for _ in 0..INSTRUCTIONS / ACCUMULATORS {
            for r in acc.iter_mut() {
                *r = _mm512_dpbf16_ps(*r, one, one);
            }
        }
        acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn int8_quads() -> i32 {
        let one = _mm512_set1_epi8(black_box(1));
        let mut acc = [_mm512_setzero_si512(); ACCUMULATORS];
        for _ in 0..INSTRUCTIONS / ACCUMULATORS {
            for r in acc.iter_mut() {
                *r = _mm512_dpbusd_epi32(*r, one, one);
            }
        }
        acc.iter()
            .map(|&r| _mm512_reduce_add_epi32(r))
            .fold(0, i32::wrapping_add)
    }

    /// Prints one line per instruction the CPU has: billions of instructions and of
    /// multiply-adds per second.
    pub fn report() {
        let line = |name: &str, macs_per_instruction: usize, time: f64| {
            let rate = INSTRUCTIONS as f64 / time / 1e9;
            println!(
                "{name:<22} {rate:6.2} G instructions/s  {:7.1} G multiply-adds/s",
                rate * macs_per_instruction as f64
            );
        };
        let timed = |f: &dyn Fn()| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        };
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present.
            line(
                "vfmadd231ps (f32)",
                16,
                timed(&|| {
                    black_box(unsafe { f32_fma() });
                }),
            );
        } else {
            println!("no AVX-512F on this CPU");
            return;
        }
        if is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX-512 BF16 is present.
            line(
                "vdpbf16ps (bf16)",
                32,
                timed(&|| {
                    black_box(unsafe { bf16_pairs() });
                }),
            );
        } else {
            println!("vdpbf16ps (bf16)       not on this CPU");
        }
        if is_x86_feature_detected!("avx512vnni") {
            // SAFETY: AVX-512 VNNI is present.
            line(
                "vpdpbusd (int8)",
                64,
                timed(&|| {
                    black_box(unsafe { int8_quads() });
                }),
            );
        } else {
            println!("vpdpbusd (int8)        not on this CPU");
        }
    }
}

fn main() {
    let rounds = match std::env::args().nth(1) {
        None => 2,
        Some(arg) => match arg.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: isa_rates [ROUNDS]   (ROUNDS: a positive integer, default 2)");
                std::process::exit(2);
            }
        },
    };
    #[cfg(target_arch = "x86_64")]
    for round in 1..=rounds {
        println!("round {round}, one core:");
        rates::report();
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = rounds;
        println!("isa_rates measures x86-64 instructions only");
    }
}
