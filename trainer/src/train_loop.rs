//! The training loop shared by `pretrain` and `distill`: streaming data, per-micro-batch
//! masking seeds, data-parallel gradient reduction, AdamW with warm-up and cosine decay,
//! clipping, accumulation, progress bar, metrics, loss plot and atomic, resumable checkpoints.
//!
//! A step consumes `accumulate × ranks` micro-batches (the global batch) from one stream that
//! every rank reads identically; rank `r` computes micro-batches `r·accumulate ..
//! (r+1)·accumulate`. Every rank prepares (masks) the whole global batch, so each loss term is
//! divided by its global normaliser (masked tokens, residues) before backward, and summing the
//! gradients over ranks gives exactly the gradient of one process running the whole batch.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use plm_model::batching::plan_batches;
use plm_model::checkpoint::{read_json, save_checkpoint_with, write_json, Manifest};

use crate::comm::{broadcast_vars, gather_per_rank, gather_shards, reduce_gradients, Communicator};
use crate::data::{BatchStream, DataPosition};
use crate::model_init::TrainableModel;
use crate::optim::{accumulate, learning_rate, squared_norm, AdamW, AdamWConfig};
use crate::plot;
use crate::storage::Location;

/// Options shared by every training objective (stored in the run so `--resume` needs no flags).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct LoopArgs {
    /// Training FASTA (.gz allowed): a path, file:///path or s3://bucket/key.
    #[arg(long)]
    pub train: Location,
    /// Validation FASTA (path or URL).
    #[arg(long)]
    pub valid: Option<Location>,
    /// Run directory (path or s3://bucket/prefix): the checkpoint goes to RUN/last, metrics to
    /// RUN/metrics.jsonl, the loss plot to RUN/loss.png (in object storage: checkpoints under
    /// RUN/checkpoints/, published by the pointer RUN/last.json).
    #[arg(long)]
    pub out: Location,
    /// Model name written into the manifest.
    #[arg(long, default_value = "plm-esm")]
    pub name: String,
    /// Optimizer steps. With `--resume`, a larger value given on the command line extends the
    /// run (the cosine schedule is stretched to the new total); left out, the stored one is kept.
    #[arg(long, default_value_t = 10_000)]
    pub steps: usize,
    /// Whether `--steps` was typed (not defaulted): only then may `--resume` extend a run.
    #[arg(skip)]
    #[serde(skip)]
    pub steps_given: bool,
    /// Peak learning rate.
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Token budget of one micro-batch (padding included).
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    /// Micro-batches per optimizer step and rank (the global batch is this × ranks).
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    /// Longest crop of a sequence, in residues.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Gradient clipping by global norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Masking rate.
    #[arg(long, default_value_t = 0.15)]
    pub mask_rate: f64,
    /// Seed of initialisation, data order and masking.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Validate every N steps.
    #[arg(long, default_value_t = 500)]
    pub eval_every: usize,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 500)]
    pub save_every: usize,
    /// Validation sequences used.
    #[arg(long, default_value_t = 500)]
    pub valid_sequences: usize,
    /// Sequences per shuffle buffer.
    #[arg(long, default_value_t = 4096)]
    pub buffer: usize,
    /// Precision of forward and backward passes: f32, or bf16 mixed precision (f32 master
    /// weights, optimizer and losses). For GPUs; on CPU bf16 runs but is slower than f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    #[serde(default)]
    pub dtype: Precision,
    /// Shard the AdamW moments across ranks (ZeRO stage 1): each rank keeps 1/ranks of the
    /// optimizer state, gradients are reduce-scattered and updated slices all-gathered. Same
    /// results as without; chosen per launch (a resumed run takes this launch's setting).
    #[arg(long)]
    #[serde(default)]
    pub shard_optimizer: bool,
}

/// Compute precision of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 forward and backward passes over f32 master weights.
    Bf16,
}

impl Precision {
    /// The dtype of forward passes.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
        }
    }

    /// Warns when bf16 is asked for on a CPU, where it only costs time.
    pub fn warn_if_slow(self, device: &candle_core::Device, comm: &dyn Communicator) {
        if self == Self::Bf16 && device.is_cpu() && comm.is_root() {
            eprintln!(
                "warning: --dtype bf16 on the CPU is slower than f32 (no bf16 GEMM speed-up); \
                 it is meant for GPUs"
            );
        }
    }
}

/// Hyper-parameters of a run that contain the shared loop options.
pub trait RunArgs: Clone + Serialize + DeserializeOwned {
    /// The shared options.
    fn common(&self) -> &LoopArgs;
    /// The shared options, mutably.
    fn common_mut(&mut self) -> &mut LoopArgs;
}

/// Resumption state stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState<A> {
    /// Optimizer steps done.
    pub step: usize,
    /// Where the data stream stands.
    pub data: DataPosition,
    /// Residues seen (all ranks).
    pub tokens_seen: u64,
    /// Wall-clock seconds spent so far.
    pub elapsed_s: f64,
    /// The run's hyper-parameters.
    pub args: A,
    /// Last validation metrics (`valid_loss`, `valid_perplexity`, ...).
    #[serde(default)]
    pub valid: BTreeMap<String, f64>,
    /// Processes that trained the last step.
    #[serde(default = "one")]
    pub ranks: usize,
}

fn one() -> usize {
    1
}

/// Normalisers of a batch: each loss term is a mean over one of these, taken over the global
/// batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Masked (prediction target) positions.
    pub masked: usize,
    /// Residue positions (no special tokens, no padding).
    pub residues: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.masked += o.masked;
        self.residues += o.residues;
    }
}

/// What a training loop optimises.
pub trait Objective {
    /// A prepared (tokenised, masked) micro-batch.
    type Batch;
    /// Names of the loss terms reported besides the total, in [`Objective::loss`]'s order.
    fn term_names(&self) -> &'static [&'static str];
    /// Tokenises and masks a micro-batch with `rng`; returns it with its normalisers.
    fn prepare(&self, sequences: &[String], rng: &mut StdRng) -> Result<(Self::Batch, Counts)>;
    /// This micro-batch's share of the loss, every term already divided by its normaliser in
    /// `global` (so shares add up over micro-batches and ranks), and the terms' values.
    fn loss(&self, batch: &Self::Batch, global: &Counts) -> Result<(Tensor, Vec<f64>)>;
    /// Everything the optimizer updates.
    fn trainable(&self) -> Vec<(String, Var)>;
    /// The model saved as the checkpoint.
    fn model(&self) -> &TrainableModel;
    /// Trained tensors that are not part of the saved model (restored on resume).
    fn aux_tensors(&self) -> HashMap<String, Tensor> {
        HashMap::new()
    }
    /// Loads the model and auxiliary tensors from a run checkpoint.
    fn restore(&mut self, dir: &Path) -> Result<()>;
    /// Validation metrics; must include `valid_loss` (plotted).
    fn validate(&self, sequences: &[String], args: &LoopArgs) -> Result<Vec<(String, f64)>>;
    /// Objective-specific provenance for the manifest.
    fn describe(&self) -> serde_json::Value;
}

pub use crate::run_dir::{RunDir, LAST, LOSS_PLOT, METRICS};

/// Trainer state inside a checkpoint.
pub const STATE: &str = "trainer.json";
/// Optimizer state inside a checkpoint.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// Auxiliary trained tensors (e.g. a distillation projection) inside a checkpoint.
pub const AUX: &str = "aux.safetensors";
/// The RNG of global micro-batch `index` of `step` (independent of how ranks split the batch).
pub fn micro_batch_rng(seed: u64, step: usize, index: usize) -> StdRng {
    StdRng::seed_from_u64(
        seed ^ (step as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// The arguments (`name (run: stored, here: given)`) whose stored values differ from this launch's,
/// other than the ones a launch may change (`steps`, `shard_optimizer`).
fn differing_args<A: Serialize>(stored: &A, given: &A) -> Vec<String> {
    fn leaves(v: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if v.is_object() {
                        leaves(v, out);
                    } else {
                        out.insert(k, v);
                    }
                }
            }
            other => {
                out.insert(String::new(), other);
            }
        }
    }
    let flat = |a: &A| {
        let mut out = BTreeMap::new();
        leaves(serde_json::to_value(a).unwrap_or_default(), &mut out);
        out
    };
    let (stored, given) = (flat(stored), flat(given));
    stored
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "steps" | "steps_given" | "shard_optimizer"))
        .filter_map(|(k, v)| {
            let here = given.get(k)?;
            (here != v).then(|| format!("--{} (run: {v}, here: {here})", k.replace('_', "-")))
        })
        .collect()
}

/// Opens a run: the stored arguments and state when resuming (only the step budget may grow,
/// and only when `--steps` was given), otherwise a fresh state from `args`; with the run's
/// directory (a remote run's checkpoint is fetched by every rank).
pub fn open_run<A: RunArgs>(
    args: A,
    resume: bool,
    comm: &dyn Communicator,
) -> Result<(TrainerState<A>, RunDir)> {
    let out = args.common().out.clone();
    let run = RunDir::open(&out, comm.rank())?;
    let last = run.last();
    if resume && run.fetch_last(STATE, comm.is_root())? {
        let mut state: TrainerState<A> = read_json(&last.join(STATE))?;
        if args.common().steps_given {
            let steps = args.common().steps.max(state.args.common().steps);
            state.args.common_mut().steps = steps;
        }
        // How this launch spreads the work is its own choice, not the run's.
        state.args.common_mut().shard_optimizer = args.common().shard_optimizer;
        if comm.is_root() {
            eprintln!("resuming {out} at step {}", state.step);
            let differing = differing_args(&state.args, &args);
            if !differing.is_empty() {
                eprintln!(
                    "the run keeps its stored arguments; this command line's values (typed or default) differ and are not used: {}",
                    differing.join(", ")
                );
            }
            run.trim_metrics(state.step)?;
        }
        return Ok((state, run));
    }
    if resume && comm.is_root() {
        eprintln!("no checkpoint in {out} yet; starting fresh");
    }
    let state = TrainerState {
        step: 0,
        data: DataPosition::default(),
        tokens_seen: 0,
        elapsed_s: 0.0,
        args,
        valid: BTreeMap::new(),
        ranks: comm.size(),
    };
    Ok((state, run))
}

/// Value of an objective over a fixed set of sequences (fixed crops, batches and masks), with
/// every term averaged over the whole set: (total, terms).
pub fn evaluate<O: Objective>(
    objective: &O,
    sequences: &[String],
    max_tokens: usize,
    seed: u64,
) -> Result<(f64, Vec<f64>)> {
    let lengths: Vec<usize> = sequences.iter().map(String::len).collect();
    let mut prepared = Vec::new();
    let mut global = Counts::default();
    for (bi, batch) in plan_batches(&lengths, max_tokens).into_iter().enumerate() {
        let seqs: Vec<String> = batch.iter().map(|&i| sequences[i].clone()).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ (bi as u64 + 1).wrapping_mul(0x51_7CC1));
        let (b, c) = objective.prepare(&seqs, &mut rng)?;
        global += c;
        prepared.push(b);
    }
    if global.residues == 0 {
        bail!("no validation residues");
    }
    let mut total = 0f64;
    let mut terms = vec![0f64; objective.term_names().len()];
    for b in &prepared {
        let (loss, t) = objective.loss(b, &global)?;
        total += loss.to_scalar::<f32>()? as f64;
        for (acc, v) in terms.iter_mut().zip(t) {
            *acc += v;
        }
    }
    Ok((total, terms))
}

/// Runs the loop from `state` to `state.args.common().steps`, checkpointing into RUN/last
/// (published by `run`). `valid` are the validation sequences (used on rank 0 only).
pub fn train<A: RunArgs, O: Objective>(
    run: &RunDir,
    mut state: TrainerState<A>,
    objective: &mut O,
    valid: Option<&[String]>,
    comm: &dyn Communicator,
) -> Result<TrainerState<A>> {
    let mut args = state.args.common().clone();
    if args.accumulate == 0 {
        bail!("--accumulate must be at least 1");
    }
    let last = run.last();
    let root = comm.is_root();
    let ranks = comm.size();
    if state.step > 0 && state.ranks != ranks {
        args.accumulate = rescale_accumulation(state.ranks, args.accumulate, ranks, root);
        state.args.common_mut().accumulate = args.accumulate;
    }
    state.ranks = ranks;
    let shards = if args.shard_optimizer { ranks } else { 1 };
    let mut opt = AdamW::new(
        objective.trainable(),
        AdamWConfig::default(),
        shards,
        if shards > 1 { comm.rank() } else { 0 },
    )?;
    if state.step > 0 {
        objective.restore(&last)?;
        opt.load(&last.join(OPTIMIZER))?;
    }
    // Identical replicas whatever happened before (seeded init, loading).
    broadcast_vars(comm, opt.vars()).context("broadcasting the weights of rank 0")?;
    let device = opt
        .vars()
        .first()
        .map(|(_, v)| v.device().clone())
        .context("nothing to train")?;
    let state_mib = gather_per_rank(comm, opt.state_bytes() as f64 / MIB)?;
    if root {
        eprintln!(
            "{}: {} parameters; optimizer state per rank {} MiB{}",
            comm.describe(),
            opt.layout().total(),
            state_mib
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            if shards > 1 { " (sharded)" } else { "" }
        );
    }
    let mut stream = BatchStream::open(
        &args.train,
        args.seed,
        args.buffer,
        args.max_len,
        args.max_tokens,
        state.data,
    )?;
    let mut metrics = if root {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.local.join(METRICS))
                .context("opening metrics.jsonl")?,
        )
    } else {
        None
    };
    let bar = if root {
        ProgressBar::new(args.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step as u64);
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut window_tokens = 0u64;
    let mut window_start = Instant::now();
    let names = objective.term_names();
    let per_rank = args.accumulate;
    let mine = comm.rank() * per_rank..(comm.rank() + 1) * per_rank;
    while state.step < args.steps {
        let lr = learning_rate(state.step, args.warmup, args.steps, args.lr, 0.1);
        // The whole global batch is read and prepared on every rank (cheap next to the model),
        // so normalisers are global without communication.
        let mut own = Vec::with_capacity(per_rank);
        let mut global = Counts::default();
        for index in 0..per_rank * ranks {
            let seqs = stream.next_batch()?;
            let mut rng = micro_batch_rng(args.seed, state.step, index);
            let (batch, counts) = objective.prepare(&seqs, &mut rng)?;
            global += counts;
            let residues: u64 = seqs.iter().map(|s| s.len() as u64).sum();
            state.tokens_seen += residues;
            window_tokens += residues;
            if mine.contains(&index) {
                own.push(batch);
            }
        }
        let mut grads = Vec::new();
        // [total, terms...]: summed over micro-batches, then over ranks.
        let mut logged = vec![0f64; 1 + names.len()];
        for batch in &own {
            let (loss, terms) = objective.loss(batch, &global)?;
            logged[0] += loss.to_scalar::<f32>()? as f64;
            for (acc, v) in logged[1..].iter_mut().zip(terms) {
                *acc += v;
            }
            accumulate(&mut grads, opt.gradients(&loss.backward()?))?;
        }
        let present: Vec<bool> = grads.iter().map(Option::is_some).collect();
        let shard_grad = reduce_gradients(comm, opt.layout(), &grads, &mut logged, &device)
            .context("reducing gradients")?;
        drop(grads);
        let mut squares = [squared_norm(&shard_grad)?];
        if shards > 1 {
            comm.all_reduce_sum_f64(&mut squares)
                .context("reducing the gradient norm")?;
        }
        let norm = squares[0].sqrt();
        if !norm.is_finite() {
            bail!("gradient norm is {norm} at step {}; lower --lr", state.step);
        }
        let scale = if args.clip > 0.0 && norm > args.clip {
            args.clip / norm
        } else {
            1.0
        };
        let updated = opt.step_shard(&shard_grad, &present, lr, scale)?;
        let flat = gather_shards(comm, opt.layout(), &updated).context("gathering weights")?;
        opt.set_parameters(&flat)?;
        state.step += 1;
        state.data = stream.position();
        let loss = logged[0];
        let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(state.step as u64);
        bar.set_message(format!("loss {loss:.3} {tps:.0} tok/s"));
        let mut record = serde_json::json!({
            "step": state.step, "loss": loss, "lr": lr, "grad_norm": norm,
            "tokens_per_s": tps, "tokens_seen": state.tokens_seen,
            "elapsed_s": elapsed_before + started.elapsed().as_secs_f64(),
            "ranks": ranks,
        });
        for (name, v) in names.iter().zip(&logged[1..]) {
            record[*name] = (*v).into();
        }
        if state.step.is_multiple_of(50) {
            window_tokens = 0;
            window_start = Instant::now();
        }
        if let (true, Some(v)) = (root, valid) {
            if state.step.is_multiple_of(args.eval_every) || state.step == args.steps {
                let values = objective.validate(v, &args)?;
                let text: Vec<String> = values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                bar.println(format!("step {}: {}", state.step, text.join(", ")));
                for (k, v) in values {
                    record[&k] = v.into();
                    state.valid.insert(k, v);
                }
            }
        }
        if let Some(m) = metrics.as_mut() {
            writeln!(m, "{record}").context("writing metrics.jsonl")?;
        }
        if state.step.is_multiple_of(args.save_every) || state.step == args.steps {
            // Every rank takes part in gathering the optimizer state and the memory figures.
            let (m, v) = opt.moments();
            let (m, v) = (
                gather_shards(comm, opt.layout(), m)?,
                gather_shards(comm, opt.layout(), v)?,
            );
            let memory = RankMemory {
                optimizer_state_mib: state_mib.clone(),
                peak_rss_mib: gather_per_rank(comm, peak_rss_mib())?,
            };
            if root {
                state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                save_run(&last, objective, &opt, (&m, &v), &memory, &state)?;
                if let Some(m) = metrics.as_mut() {
                    m.flush().context("writing metrics.jsonl")?;
                }
                write_plot(&run.local, &bar);
                run.publish(state.step)
                    .with_context(|| format!("publishing to {}", args.out))?;
            }
        }
    }
    bar.finish_with_message(format!("done: {} steps", state.step));
    if root {
        write_plot(&run.local, &bar);
        run.publish_logs()?;
    }
    Ok(state)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Per-rank memory, reported in the manifest (indexed by rank).
#[derive(Debug, Clone, Serialize)]
pub struct RankMemory {
    /// AdamW moments held.
    pub optimizer_state_mib: Vec<f64>,
    /// Peak resident memory of the process so far (`VmHWM`).
    pub peak_rss_mib: Vec<f64>,
}

/// This process's peak resident memory in MiB (0 where /proc is not available).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The per-rank micro-batch count that keeps a resumed run's global batch (`accumulate ×
/// ranks`) when it continues on a different number of ranks; when the global batch does not
/// divide, the run goes on with the stored per-rank count and a larger or smaller global batch.
fn rescale_accumulation(old_ranks: usize, accumulate: usize, ranks: usize, root: bool) -> usize {
    let global = accumulate * old_ranks.max(1);
    if global.is_multiple_of(ranks) {
        let per_rank = global / ranks;
        if root {
            eprintln!(
                "note: the run was trained on {old_ranks} rank(s), now {ranks}: keeping its global \
                 batch of {global} micro-batches with --accumulate {per_rank}"
            );
        }
        per_rank
    } else {
        if root {
            eprintln!(
                "note: the run was trained on {old_ranks} rank(s), now {ranks}: its global batch of \
                 {global} micro-batches does not divide, so it becomes {}",
                accumulate * ranks
            );
        }
        accumulate
    }
}

/// Redraws RUN/loss.png from RUN/metrics.jsonl; a failure is reported, not fatal.
fn write_plot(out: &Path, bar: &ProgressBar) {
    if let Err(e) = plot::plot_run(out) {
        bar.println(format!("warning: loss plot not written: {e}"));
    }
}

/// Writes the model, optimizer, auxiliary tensors and trainer state into `dir` atomically.
pub fn save_run<A: RunArgs, O: Objective>(
    dir: &Path,
    objective: &O,
    opt: &AdamW,
    moments: (&Tensor, &Tensor),
    memory: &RankMemory,
    state: &TrainerState<A>,
) -> Result<()> {
    let args = state.args.common();
    let mut training = serde_json::json!({
        "data": args.train.file_name(),
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "seed": args.seed,
        "lr": args.lr,
        "max_tokens": args.max_tokens,
        "accumulate": args.accumulate,
        "ranks": state.ranks,
        "dtype": args.dtype,
        "parameters": opt.layout().total(),
        "shard_optimizer": args.shard_optimizer,
        "memory": memory,
        "elapsed_s": state.elapsed_s,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) =
        (training.as_object_mut(), objective.describe())
    {
        obj.extend(extra);
    }
    for (k, v) in &state.valid {
        training[k] = (*v).into();
    }
    let manifest = Manifest {
        name: args.name.clone(),
        training,
        ..Default::default()
    };
    let model = objective.model();
    let aux = objective.aux_tensors();
    save_checkpoint_with(dir, &model.config, &model.tensors(), manifest, |tmp| {
        opt.save_full(moments.0, moments.1, &tmp.join(OPTIMIZER))
            .map_err(|e| e.to_string())?;
        if !aux.is_empty() {
            candle_core::safetensors::save(&aux, tmp.join(AUX)).map_err(|e| e.to_string())?;
        }
        write_json(&tmp.join(STATE), state).map_err(|e| e.to_string())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inner {
        lr: f64,
        steps: usize,
        shard_optimizer: bool,
    }

    #[derive(Serialize)]
    struct Args {
        temperature: f32,
        common: Inner,
    }

    #[test]
    fn resuming_names_the_arguments_the_run_keeps() {
        let args = |temperature, lr, steps, shard_optimizer| Args {
            temperature,
            common: Inner {
                lr,
                steps,
                shard_optimizer,
            },
        };
        let stored = args(2.0, 1e-3, 100, false);
        // What a launch may change is not reported.
        assert!(differing_args(&stored, &args(2.0, 1e-3, 500, true)).is_empty());
        assert_eq!(
            differing_args(&stored, &args(1.0, 4e-4, 100, false)),
            [
                "--lr (run: 0.001, here: 0.0004)",
                "--temperature (run: 2.0, here: 1.0)"
            ]
        );
    }
}
