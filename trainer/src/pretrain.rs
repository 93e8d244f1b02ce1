//! `plm-train pretrain`: masked-language-model pretraining with exact resumption.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use plm_model::batching::plan_batches;
use plm_model::checkpoint::{read_json, save_checkpoint_with, write_json, Manifest};
use plm_model::{EsmConfig, EsmForMaskedLM, ProteinTokenizer};

use crate::data::{random_crop, read_fasta, BatchStream, DataPosition};
use crate::masking::{mask_batch, MaskedBatch};
use crate::model_init::TrainableModel;
use crate::optim::{accumulate, grad_norm, learning_rate, AdamW, AdamWConfig};

/// Hyper-parameters of a pretraining run (stored in the run so `--resume` needs no flags).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PretrainArgs {
    /// Training FASTA (.gz allowed).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation FASTA for perplexity.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Run directory: the checkpoint goes to RUN/last, metrics to RUN/metrics.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Model name written into the manifest.
    #[arg(long, default_value = "plm-esm")]
    pub name: String,
    /// Width of the model.
    #[arg(long, default_value_t = 320)]
    pub hidden: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 6)]
    pub layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 20)]
    pub heads: usize,
    /// Feed-forward width (default 4 × hidden).
    #[arg(long)]
    pub intermediate: Option<usize>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 10_000)]
    pub steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Token budget of one micro-batch (padding included).
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    /// Micro-batches per optimizer step.
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
}

/// Resumption state stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// Where the data stream stands.
    pub data: DataPosition,
    /// Residues seen.
    pub tokens_seen: u64,
    /// Wall-clock seconds spent so far.
    pub elapsed_s: f64,
    /// The run's hyper-parameters.
    pub args: PretrainArgs,
    /// Last validation perplexity.
    pub valid_perplexity: Option<f64>,
}

/// File names inside the run directory.
pub const LAST: &str = "last";
const STATE: &str = "trainer.json";
const OPTIMIZER: &str = "optimizer.safetensors";
const METRICS: &str = "metrics.jsonl";

/// Cross-entropy over the masked positions of a batch; returns (loss, number of targets).
pub fn mlm_loss(
    model: &EsmForMaskedLM,
    batch: &MaskedBatch,
    device: &Device,
) -> Result<(Tensor, usize)> {
    let ids = Tensor::from_vec(batch.input_ids.clone(), (batch.batch, batch.tokens), device)?;
    let mask = Tensor::from_vec(
        batch.attention_mask.clone(),
        (batch.batch, batch.tokens),
        device,
    )?;
    let (logits, _) = model.forward_mlm(&ids, &mask)?;
    let vocab = logits.dim(2)?;
    let flat = logits.reshape((batch.batch * batch.tokens, vocab))?;
    let positions = Tensor::new(batch.target_positions.as_slice(), device)?;
    let targets = Tensor::new(batch.target_ids.as_slice(), device)?;
    let picked = flat.index_select(&positions, 0)?;
    let loss = candle_nn::loss::cross_entropy(&picked, &targets)?;
    Ok((loss, batch.target_ids.len()))
}

/// Masked-LM perplexity of `sequences` with fixed crops and masks (seeded).
pub fn perplexity(
    model: &EsmForMaskedLM,
    tokenizer: &ProteinTokenizer,
    sequences: &[String],
    max_tokens: usize,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let lengths: Vec<usize> = sequences.iter().map(String::len).collect();
    let mut total = 0f64;
    let mut count = 0usize;
    for (bi, batch) in plan_batches(&lengths, max_tokens).into_iter().enumerate() {
        let seqs: Vec<String> = batch.iter().map(|&i| sequences[i].clone()).collect();
        let mut rng = StdRng::seed_from_u64(seed ^ (bi as u64 + 1).wrapping_mul(0x51_7CC1));
        let masked = mask_batch(&seqs, tokenizer, 0.15, &mut rng);
        let (loss, n) = mlm_loss(model, &masked, device)?;
        total += loss.to_scalar::<f32>()? as f64 * n as f64;
        count += n;
    }
    if count == 0 {
        bail!("no validation tokens");
    }
    Ok((total / count as f64).exp())
}

/// Loads validation sequences cropped deterministically.
pub fn load_validation(
    path: &Path,
    limit: usize,
    max_len: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let records = read_fasta(path, limit, false)?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(records
        .iter()
        .map(|r| random_crop(&r.sequence, max_len, &mut rng))
        .collect())
}

/// Runs (or resumes) pretraining.
pub fn run(args: PretrainArgs, resume: bool, device: &Device) -> Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let last = args.out.join(LAST);
    let (args, mut state) = if resume && last.join(STATE).is_file() {
        let state: TrainerState = read_json(&last.join(STATE))?;
        let mut stored = state.args.clone();
        // The step budget may be extended on resume; everything else comes from the run.
        stored.steps = args.steps.max(stored.steps);
        eprintln!("resuming {} at step {}", args.out.display(), state.step);
        (
            stored.clone(),
            TrainerState {
                args: stored,
                ..state
            },
        )
    } else {
        if resume {
            eprintln!("no checkpoint in {} yet; starting fresh", last.display());
        }
        let state = TrainerState {
            step: 0,
            data: DataPosition::default(),
            tokens_seen: 0,
            elapsed_s: 0.0,
            args: args.clone(),
            valid_perplexity: None,
        };
        (args, state)
    };
    let config = EsmConfig::esm2(
        args.hidden,
        args.layers,
        args.heads,
        args.intermediate.unwrap_or(4 * args.hidden),
    );
    config.validate().map_err(anyhow::Error::msg)?;
    let mut model = TrainableModel::new(&config, args.seed, device)?;
    let mut opt = AdamW::new(model.named_vars(), AdamWConfig::default())?;
    if state.step > 0 {
        model.load_weights(&last.join(plm_model::checkpoint::files::WEIGHTS))?;
        opt.load(&last.join(OPTIMIZER))?;
    }
    let tokenizer = ProteinTokenizer::esm();
    let valid = match &args.valid {
        Some(p) => Some(load_validation(
            p,
            args.valid_sequences,
            args.max_len,
            args.seed,
        )?),
        None => None,
    };
    let mut stream = BatchStream::open(
        &args.train,
        args.seed,
        args.buffer,
        args.max_len,
        args.max_tokens,
        state.data,
    )?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join(METRICS))
        .context("opening metrics.jsonl")?;

    let bar = ProgressBar::new(args.steps as u64);
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
    while state.step < args.steps {
        let lr = learning_rate(state.step, args.warmup, args.steps, args.lr, 0.1);
        let mut grads = Vec::new();
        let mut loss_sum = 0f64;
        let mut rng = StdRng::seed_from_u64(
            args.seed ^ (state.step as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        for _ in 0..args.accumulate {
            let seqs = stream.next_batch()?;
            let residues: usize = seqs.iter().map(String::len).sum();
            let masked = mask_batch(&seqs, &tokenizer, args.mask_rate, &mut rng);
            let (loss, _) = mlm_loss(&model.model, &masked, device)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let store = (loss / args.accumulate as f64)?.backward()?;
            accumulate(&mut grads, opt.gradients(&store))?;
            state.tokens_seen += residues as u64;
            window_tokens += residues as u64;
        }
        let norm = grad_norm(&grads)?;
        if !norm.is_finite() {
            bail!("gradient norm is {norm} at step {}; lower --lr", state.step);
        }
        let scale = if args.clip > 0.0 && norm > args.clip {
            args.clip / norm
        } else {
            1.0
        };
        opt.step(&grads, lr, scale)?;
        state.step += 1;
        state.data = stream.position();
        let loss = loss_sum / args.accumulate as f64;
        let tps = window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(state.step as u64);
        bar.set_message(format!("loss {loss:.3} {tps:.0} tok/s"));
        let mut record = serde_json::json!({
            "step": state.step, "loss": loss, "lr": lr, "grad_norm": norm,
            "tokens_per_s": tps, "tokens_seen": state.tokens_seen,
            "elapsed_s": elapsed_before + started.elapsed().as_secs_f64(),
        });
        if state.step % 50 == 0 {
            window_tokens = 0;
            window_start = Instant::now();
        }
        if let Some(v) = &valid {
            if state.step % args.eval_every == 0 || state.step == args.steps {
                let ppl = perplexity(
                    &model.model,
                    &tokenizer,
                    v,
                    args.max_tokens,
                    args.seed,
                    device,
                )?;
                state.valid_perplexity = Some(ppl);
                record["valid_perplexity"] = ppl.into();
                bar.println(format!(
                    "step {}: validation perplexity {ppl:.3}",
                    state.step
                ));
            }
        }
        writeln!(metrics, "{record}").context("writing metrics.jsonl")?;
        if state.step % args.save_every == 0 || state.step == args.steps {
            state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            save_run(&last, &model, &opt, &state)?;
        }
    }
    bar.finish_with_message(format!("done: {} steps", state.step));
    Ok(())
}

/// Writes weights, optimizer and trainer state into `dir` atomically.
pub fn save_run(
    dir: &Path,
    model: &TrainableModel,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<()> {
    let manifest = Manifest {
        name: state.args.name.clone(),
        training: serde_json::json!({
            "objective": "masked language modelling (15% selected; 80/10/10)",
            "data": state.args.train.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "steps": state.step,
            "tokens_seen": state.tokens_seen,
            "valid_perplexity": state.valid_perplexity,
            "seed": state.args.seed,
            "lr": state.args.lr,
            "max_tokens": state.args.max_tokens,
            "accumulate": state.args.accumulate,
            "elapsed_s": state.elapsed_s,
        }),
        ..Default::default()
    };
    save_checkpoint_with(dir, &model.config, &model.tensors(), manifest, |tmp| {
        opt.save(&tmp.join(OPTIMIZER)).map_err(|e| e.to_string())?;
        write_json(&tmp.join(STATE), state).map_err(|e| e.to_string())
    })?;
    Ok(())
}
