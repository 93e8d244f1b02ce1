//! The packed-token transformer block of CPU inference.
//!
//! Candle runs one kernel per tensor op, most of them single-threaded and each allocating its
//! output, and loops over `batch × heads` tiny GEMMs for attention. Here the real (unpadded)
//! tokens of a batch are packed into one `(tokens, hidden)` matrix and each block runs as
//! three parallel phases over the engine's rayon pool:
//!
//! 1. row chunks: layer norm, fused Q/K/V projection (bias pre-filled), scaling and rotary;
//! 2. `(sequence, head, query block)` tasks: scores, softmax and context for that head only
//!    (the softmax's division applied to the context rows),
//!    over the sequence's own tokens (so padding costs nothing and needs no mask), fused in
//!    registers 16 queries at a time where the CPU has AVX-512 ([`super::fused_attention`]),
//!    by `gemm` and the column softmax elsewhere;
//! 3. row chunks: output projection and residual, layer norm, feed-forward with GELU and
//!    residual, the `(chunk, intermediate)` activation staying in cache.
//!
//! GEMMs are single-threaded `gemm` calls inside the parallel tasks, so the two levels of
//! threading never compete. The model's CPU variant ([`super::cpu`]) runs its blocks here; the
//! tensor path in the sibling modules is the reference. An int8 or bf16 model's projections
//! run as int8 or bf16 products instead ([`super::packed`]).

#![allow(unsafe_code)] // Disjoint writes into shared output buffers from parallel tasks.

use std::cell::RefCell;

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::fused_attention;
use super::kernels;
use super::packed::PackedLinear;

/// The weight of a projection: f32 in PyTorch layout `(out, in)`, or packed int8/bf16.
#[derive(Clone, Copy)]
pub(crate) enum Projection<'a> {
    F32(&'a [f32]),
    Packed(&'a PackedLinear),
}

/// The weights of one block as host slices.
pub(crate) struct BlockWeights<'a> {
    pub ln1_w: &'a [f32],
    pub ln1_b: &'a [f32],
    /// `(3·hidden, hidden)`: query, key and value projections stacked.
    pub qkv_w: Projection<'a>,
    pub qkv_b: &'a [f32],
    pub out_w: Projection<'a>,
    pub out_b: &'a [f32],
    pub ln2_w: &'a [f32],
    pub ln2_b: &'a [f32],
    pub ff1_w: Projection<'a>,
    pub ff1_b: &'a [f32],
    pub ff2_w: Projection<'a>,
    pub ff2_b: &'a [f32],
}

/// Shapes shared by every block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub eps: f32,
}

/// The packed token layout of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Packing {
    /// For each packed row, its `(batch row, token index)`; the token index is the rotary
    /// position.
    pub origin: Vec<(usize, usize)>,
    /// `(first packed row, tokens)` of each batch row.
    pub spans: Vec<(usize, usize)>,
}

impl Packing {
    /// Packs the tokens whose mask is non-zero, batch row by batch row.
    pub fn from_mask(mask: &[f32], batch: usize, tokens: usize) -> Self {
        let mut origin = Vec::with_capacity(mask.len());
        let mut spans = Vec::with_capacity(batch);
        for b in 0..batch {
            let start = origin.len();
            for t in 0..tokens {
                if mask[b * tokens + t] != 0.0 {
                    origin.push((b, t));
                }
            }
            spans.push((start, origin.len() - start));
        }
        Self { origin, spans }
    }

    /// Number of packed rows.
    pub fn rows(&self) -> usize {
        self.origin.len()
    }

    /// Scatters packed rows into a zero-padded `(batch, tokens, hidden)` buffer.
    pub fn unpack(&self, packed: &[f32], batch: usize, tokens: usize, hidden: usize) -> Vec<f32> {
        let mut out = vec![0f32; batch * tokens * hidden];
        for (r, &(b, t)) in self.origin.iter().enumerate() {
            let at = (b * tokens + t) * hidden;
            out[at..at + hidden].copy_from_slice(&packed[r * hidden..(r + 1) * hidden]);
        }
        out
    }
}

/// Host slice of a contiguous f32 CPU tensor, borrowed from its storage guard.
pub(crate) fn host_slice<'a>(
    guard: &'a (candle_core::StorageRef<'a>, &'a candle_core::Layout),
) -> Result<&'a [f32]> {
    let (storage, layout) = guard;
    let Storage::Cpu(cpu) = &**storage else {
        candle_core::bail!("fast path needs CPU tensors")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("fast path needs contiguous tensors")
    };
    Ok(&cpu.as_slice::<f32>()?[start..end])
}

/// Whether a tensor can feed the fast path.
pub(crate) fn eligible(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op() && t.is_contiguous()
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a thread-local scratch buffer of at least `len` floats.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Raw pointer that may be shared by tasks writing disjoint regions.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows per task in the element-wise row phases.
fn row_chunk(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 4).clamp(16, 256)
}

/// Rows per feed-forward pass: bounds the `(rows, intermediate)` activation while keeping the
/// GEMMs large enough that packing the weights is amortised.
const FFN_ROWS: usize = 2048;

/// Fewest rows of a projection GEMM (shorter ones are zero-padded; see [`linear`]).
const MIN_GEMM_ROWS: usize = 16;

/// Query rows per attention task: the widest block the column softmax takes.
const QUERY_BLOCK: usize = kernels::MAX_COLS;

/// Layer norm of `h`-wide rows, in parallel.
fn layer_norm_par(src: &[f32], dst: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let h = weight.len();
    let chunk = row_chunk(src.len() / h) * h;
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| kernels::layer_norm_rows(s, d, weight, bias, eps));
}

/// `out (+)= a · wᵀ + bias` for row-major `a` `(m, k)`: `out` `(m, n)` is overwritten unless
/// `accumulate` (then the product and `bias` are added to it).
fn linear(out: &mut [f32], a: &[f32], w: Projection, bias: &[f32], k: usize, accumulate: bool) {
    match w {
        Projection::F32(w) => linear_f32(out, a, w, bias, k, accumulate),
        Projection::Packed(w) => {
            let n = w.out_features();
            let rows = row_chunk(a.len() / k);
            out.par_chunks_mut(rows * n)
                .zip(a.par_chunks(rows * k))
                .for_each(|(o, a)| w.forward_rows(o, a, bias, accumulate));
        }
    }
}

/// [`linear`] with an f32 PyTorch-layout weight `w` `(n, k)`, through `gemm`.
fn linear_f32(out: &mut [f32], a: &[f32], w: &[f32], bias: &[f32], k: usize, accumulate: bool) {
    let n = bias.len();
    let m = a.len() / k;
    debug_assert_eq!(out.len(), m * n);
    debug_assert_eq!(w.len(), n * k);
    if m < MIN_GEMM_ROWS {
        // `gemm` takes another route for very short products whose rounding differs: pad
        // them, so that a row's result never depends on what else is in the batch.
        let mut a_pad = vec![0f32; MIN_GEMM_ROWS * k];
        a_pad[..a.len()].copy_from_slice(a);
        let mut out_pad = vec![0f32; MIN_GEMM_ROWS * n];
        out_pad[..out.len()].copy_from_slice(out);
        linear_f32(&mut out_pad, &a_pad, w, bias, k, accumulate);
        out.copy_from_slice(&out_pad[..out.len()]);
        return;
    }
    let chunk = row_chunk(m) * n;
    out.par_chunks_mut(chunk).for_each(|o| {
        if accumulate {
            kernels::add_rows(o, bias);
        } else {
            kernels::fill_rows(o, bias);
        }
    });
    // SAFETY: the extents follow from the asserted slice lengths; `out` is borrowed mutably
    // and so aliases neither input.
    unsafe {
        kernels::matmul_parallel(
            m,
            n,
            k,
            out.as_mut_ptr(),
            n,
            true,
            a.as_ptr(),
            k,
            w.as_ptr(),
            1,
            k,
        );
    }
}

/// The buffers of a pass's blocks, allocated once per pass and reused block after block.
///
/// Every phase overwrites the part it uses, so the contents left by the previous block never
/// matter; growing a buffer is the only allocation.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    /// `(rows, hidden)`: the normalised input, then the attention context.
    normed: Vec<f32>,
    /// `(rows, 3·hidden)`: queries, keys and values.
    qkv: Vec<f32>,
    /// `(FFN_ROWS, intermediate)` at most: the feed-forward activation of a row block.
    inter: Vec<f32>,
}

impl Workspace {
    /// Makes room for a block over `rows` rows of the shapes `d`.
    fn fit(&mut self, rows: usize, d: Dims) {
        let grow = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.normed, rows * d.hidden);
        grow(&mut self.qkv, rows * 3 * d.hidden);
        grow(&mut self.inter, FFN_ROWS.min(rows.max(1)) * d.intermediate);
    }
}

/// Runs one block on packed rows `xs` `(rows, hidden)` in place. `positions[r]` is row `r`'s
/// rotary position; `cos`/`sin` are the `(positions, head_dim/2)` tables; `ws` holds the
/// intermediate buffers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_forward(
    xs: &mut [f32],
    packing: &Packing,
    positions: &[u32],
    w: &BlockWeights,
    d: Dims,
    cos: &[f32],
    sin: &[f32],
    ws: &mut Workspace,
) {
    let h = d.hidden;
    let rows = packing.rows();
    debug_assert_eq!(xs.len(), rows * h);
    let chunk = row_chunk(rows);
    let q_scale = (d.head_dim as f32).powf(-0.5);
    ws.fit(rows, d);
    let normed = &mut ws.normed[..rows * h];

    // Phase 1: qkv = rotary(LN(x) · Wqkvᵀ + b), q scaled.
    let qkv = &mut ws.qkv[..rows * 3 * h];
    let rotary = |qkv: &mut [f32], pos: &[u32]| {
        kernels::rotary_qk(qkv, pos, cos, sin, h, d.head_dim, q_scale)
    };
    if let Projection::Packed(qkv_w) = w.qkv_w {
        // One task per row chunk for the whole phase (see `feed_forward_rows`).
        xs.par_chunks(chunk * h)
            .zip(normed.par_chunks_mut(chunk * h))
            .zip(qkv.par_chunks_mut(chunk * 3 * h))
            .zip(positions.par_chunks(chunk))
            .for_each(|(((x, normed), qkv), pos)| {
                kernels::layer_norm_rows(x, normed, w.ln1_w, w.ln1_b, d.eps);
                qkv_w.forward_rows(qkv, normed, w.qkv_b, false);
                rotary(qkv, pos);
            });
    } else {
        layer_norm_par(xs, normed, w.ln1_w, w.ln1_b, d.eps);
        linear(qkv, normed, w.qkv_w, w.qkv_b, h, false);
        qkv.par_chunks_mut(chunk * 3 * h)
            .zip(positions.par_chunks(chunk))
            .for_each(|(qkv, pos)| rotary(qkv, pos));
    }

    // Phase 2: per (sequence, head, query block) attention into ctx.
    let ctx = normed;
    let mut tasks = Vec::new();
    for &(start, len) in &packing.spans {
        for head in 0..d.heads {
            let mut q0 = 0;
            while q0 < len {
                let qn = QUERY_BLOCK.min(len - q0);
                tasks.push(AttentionTask {
                    start,
                    len,
                    head,
                    q0,
                    qn,
                });
                q0 += qn;
            }
        }
    }
    let ctx_ptr = SharedMut(ctx.as_mut_ptr());
    let qkv_ref = &*qkv;
    // One task per rayon job: a batch comes longest sequence first, so its tasks' costs fall
    // steeply, and rayon's default split (a few long runs of tasks, run in order) left one
    // thread idle for about a fifth of this phase on natural-length batches.
    tasks.par_iter().with_max_len(1).for_each(|&task| {
        // SAFETY: `ctx` holds `rows × h` floats and the tasks' regions are disjoint.
        unsafe { attend(task, qkv_ref, ctx_ptr, h, d.head_dim) }
    });

    // Phase 3: x += ctx · Woᵀ + b, then x += GELU(LN(x) · W1ᵀ + b1) · W2ᵀ + b2 by row blocks.
    if let Some(packed) = PackedFeedForward::of(w) {
        xs.par_chunks_mut(chunk * h)
            .zip(ctx.par_chunks_mut(chunk * h))
            .for_each(|(x, ctx)| feed_forward_rows(x, ctx, &packed, w, d));
        return;
    }
    linear(xs, ctx, w.out_w, w.out_b, h, true);
    let i = d.intermediate;
    let block = FFN_ROWS.min(rows.max(1));
    let inter = &mut ws.inter;
    for (x, normed) in xs.chunks_mut(block * h).zip(ctx.chunks_mut(block * h)) {
        let m = x.len() / h;
        let inter = &mut inter[..m * i];
        layer_norm_par(x, normed, w.ln2_w, w.ln2_b, d.eps);
        linear(inter, normed, w.ff1_w, w.ff1_b, h, false);
        inter.par_chunks_mut(chunk * i).for_each(kernels::gelu_erf);
        linear(x, inter, w.ff2_w, w.ff2_b, i, true);
    }
}

/// The packed projections after attention: phase 3 runs as one task per row chunk when all
/// three are packed.
struct PackedFeedForward<'a> {
    out: &'a PackedLinear,
    ff1: &'a PackedLinear,
    ff2: &'a PackedLinear,
}

impl<'a> PackedFeedForward<'a> {
    fn of(w: &BlockWeights<'a>) -> Option<Self> {
        match (w.out_w, w.ff1_w, w.ff2_w) {
            (Projection::Packed(out), Projection::Packed(ff1), Projection::Packed(ff2)) => {
                Some(Self { out, ff1, ff2 })
            }
            _ => None,
        }
    }
}

/// Phase 3 of a block on one chunk of rows `x` with their attention context `ctx` (then their
/// normalised rows): output projection and residual, layer norm, feed-forward with GELU and
/// residual. Packed projections work row by row on the calling thread, so a chunk needs no
/// other; one task per chunk for the whole phase (and for phase 1) replaces seven parallel
/// phases, each of which ended with one thread waiting for the other and the next woke it.
fn feed_forward_rows(
    x: &mut [f32],
    ctx: &mut [f32],
    p: &PackedFeedForward,
    w: &BlockWeights,
    d: Dims,
) {
    p.out.forward_rows(x, ctx, w.out_b, true);
    let normed = ctx;
    kernels::layer_norm_rows(x, normed, w.ln2_w, w.ln2_b, d.eps);
    with_scratch(x.len() / d.hidden * d.intermediate, |inter| {
        p.ff1.forward_rows(inter, normed, w.ff1_b, false);
        kernels::gelu_erf(inter);
        p.ff2.forward_rows(x, inter, w.ff2_b, true);
    });
}

/// One attention job: query rows `q0..q0 + qn` of one head of the sequence packed at rows
/// `start..start + len`.
#[derive(Clone, Copy)]
struct AttentionTask {
    start: usize,
    len: usize,
    head: usize,
    q0: usize,
    qn: usize,
}

/// `softmax(Q·Kᵀ)·V` of one task, into its rows × head columns of `ctx` (`rows × h`).
///
/// The scores are kept transposed: `Sᵀ = K·Qᵀ` as a `(len, qn)` block, the softmax runs down
/// its columns (vector lanes hold queries, no horizontal reductions), and `P·V` reads `P`
/// column-major, so `gemm` puts the query rows in its long tile dimension (a 64 × 6 kernel
/// instead of 16 × 6 with `P` row-major, which is bound by its loads at a head width of 16).
///
/// # Safety
/// `ctx` points to `rows × h` floats covering the task's rows, and no other thread touches the
/// task's region of `ctx` meanwhile.
unsafe fn attend(task: AttentionTask, qkv: &[f32], ctx: SharedMut, h: usize, hd: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if fused_attention::available(hd) {
            return attend_fused(task, qkv, ctx, h, hd);
        }
        attend_gemm(task, qkv, ctx, h, hd)
    }
}

/// [`attend`] by [`fused_attention`], 16 queries at a time.
///
/// # Safety
/// As [`attend`], and [`fused_attention::available`] for `hd`.
#[cfg(target_arch = "x86_64")]
unsafe fn attend_fused(task: AttentionTask, qkv: &[f32], ctx: SharedMut, h: usize, hd: usize) {
    let (start, len) = (task.start, task.len);
    let rows = |part: usize, row: usize| fused_attention::Rows {
        ptr: qkv[row * 3 * h + part * h + task.head * hd..].as_ptr(),
        stride: 3 * h,
    };
    with_scratch(fused_attention::scratch_len(len, hd), |scratch| {
        for g in (0..task.qn).step_by(fused_attention::QUERIES) {
            let (first, queries) = (
                start + task.q0 + g,
                fused_attention::QUERIES.min(task.qn - g),
            );
            // SAFETY: the rows lie in `qkv`; the output rows are this task's region of `ctx`
            // (the caller's contract), which aliases no input.
            unsafe {
                fused_attention::attend(
                    rows(0, first),
                    rows(1, start),
                    rows(2, start),
                    queries,
                    len,
                    hd,
                    ctx.get().add(first * h + task.head * hd),
                    h,
                    scratch,
                )
            };
        }
    });
}

/// [`attend`] by `gemm` products and the column softmax.
///
/// # Safety
/// As [`attend`].
unsafe fn attend_gemm(task: AttentionTask, qkv: &[f32], ctx: SharedMut, h: usize, hd: usize) {
    let AttentionTask {
        start,
        len,
        head,
        q0,
        qn,
    } = task;
    with_scratch(qn * (len + hd + 1), |scratch| {
        let (st, rest) = scratch.split_at_mut(qn * len);
        let (out_t, inv_sums) = rest.split_at_mut(qn * hd);
        let base = qkv.as_ptr();
        // SAFETY: q/k/v rows lie in `qkv`; `out` is this task's region of `ctx` (caller).
        unsafe {
            let q = base.add((start + q0) * 3 * h + head * hd);
            let k = base.add(start * 3 * h + h + head * hd);
            let v = base.add(start * 3 * h + 2 * h + head * hd);
            // Sᵀ (len, qn) = K · Qᵀ, row-major.
            kernels::matmul_strided(
                (len, qn, hd),
                (st.as_mut_ptr(), qn, 1),
                (k, 3 * h, 1),
                (q, 1, 3 * h),
            );
            kernels::softmax_cols_deferred(st, qn, inv_sums);
            // O (qn, hd) = P · V, O column-major in out_t, P column-major in st.
            kernels::matmul_strided(
                (qn, hd, len),
                (out_t.as_mut_ptr(), 1, qn),
                (st.as_ptr(), 1, qn),
                (v, 3 * h, 1),
            );
            let out = ctx.get().add((start + q0) * h + head * hd);
            for (i, &inv) in inv_sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(out.add(i * h), hd);
                for (d, o) in row.iter_mut().enumerate() {
                    *o = out_t[d * qn + i] * inv;
                }
            }
        }
    });
}

/// Layer norm of packed rows (the encoder's final norm).
pub(crate) fn layer_norm(xs: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let h = weight.len();
    let mut out = vec![0f32; xs.len()];
    let chunk = row_chunk(xs.len() / h.max(1)) * h;
    out.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .for_each(|(o, x)| kernels::layer_norm_rows(x, o, weight, bias, eps));
    out
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A packed `(rows, 3·h)` Q/K/V matrix with values of attention's scale.
    fn qkv(rows: usize, h: usize) -> Vec<f32> {
        (0..rows * 3 * h)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.006)
            .collect()
    }

    fn run(
        f: unsafe fn(AttentionTask, &[f32], SharedMut, usize, usize),
        task: AttentionTask,
        qkv: &[f32],
        h: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut ctx = vec![0f32; qkv.len() / 3];
        // SAFETY: `ctx` holds `rows × h` floats; one task, one thread.
        unsafe { f(task, qkv, SharedMut(ctx.as_mut_ptr()), h, hd) };
        ctx
    }

    #[test]
    fn fused_and_gemm_attention_agree() {
        if !fused_attention::available(16) {
            eprintln!("no fused attention on this CPU: skipped");
            return;
        }
        // (hidden, head width, sequence length, first query, queries), second head.
        for (h, hd, len, q0, qn) in [
            (320, 16, 300, 128, 128),
            (480, 24, 45, 0, 45),
            (64, 32, 7, 3, 4),
        ] {
            let rows = len + 5;
            let data = qkv(rows, h);
            let task = AttentionTask {
                start: 5,
                len,
                head: 1,
                q0,
                qn,
            };
            let fused = run(attend_fused, task, &data, h, hd);
            let gemm = run(attend_gemm, task, &data, h, hd);
            for (i, (a, b)) in fused.iter().zip(&gemm).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                    "h {h}: [{i}] {a} vs {b}"
                );
            }
            assert!(fused.iter().any(|&x| x != 0.0));
        }
    }

    /// `cargo test --release -p plm-model --lib attention_speeds -- --ignored --nocapture`:
    /// the two attention routes on one thread, interleaved, at natural sequence lengths.
    #[test]
    #[ignore = "timing"]
    fn attention_speeds() {
        if !fused_attention::available(16) {
            return;
        }
        let (h, hd) = (320, 16);
        for len in [128, 368, 1024] {
            let data = qkv(len, h);
            let tasks: Vec<AttentionTask> = (0..h / hd)
                .flat_map(|head| {
                    (0..len).step_by(QUERY_BLOCK).map(move |q0| AttentionTask {
                        start: 0,
                        len,
                        head,
                        q0,
                        qn: QUERY_BLOCK.min(len - q0),
                    })
                })
                .collect();
            type Attend = unsafe fn(AttentionTask, &[f32], SharedMut, usize, usize);
            let routes: [Attend; 2] = [attend_gemm, attend_fused];
            let mut ctx = vec![0f32; len * h];
            let mut best = [f64::MAX; 2];
            for _ in 0..7 {
                for (b, f) in routes.into_iter().enumerate() {
                    let t = std::time::Instant::now();
                    for &task in &tasks {
                        // SAFETY: as in `run`.
                        unsafe { f(task, &data, SharedMut(ctx.as_mut_ptr()), h, hd) };
                    }
                    best[b] = best[b].min(t.elapsed().as_secs_f64());
                }
            }
            println!(
                "len {len}: gemm {:.2} ms, fused {:.2} ms, fused is {:.2}x",
                best[0] * 1e3,
                best[1] * 1e3,
                best[0] / best[1]
            );
        }
    }
}
