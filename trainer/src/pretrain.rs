//! `plm-train pretrain`: masked-language-model pretraining with exact resumption, on one
//! process or data-parallel over MPI ranks (see [`crate::train_loop`]).

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use plm_model::batching::plan_batches;
use plm_model::{EsmConfig, EsmForMaskedLM, ProteinTokenizer};

use crate::comm::Communicator;
use crate::data::{random_crop, read_fasta_location};
use crate::masking::{mask_batch, MaskedBatch};
use crate::model_init::TrainableModel;
use crate::storage::Location;
use crate::train_loop::{self, Counts, LoopArgs, Objective, RunArgs};

pub use crate::train_loop::{TrainerState, LAST};

/// Hyper-parameters of a pretraining run (stored in the run so `--resume` needs no flags).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct PretrainArgs {
    /// Data, schedule, batching and checkpointing.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: LoopArgs,
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
}

impl RunArgs for PretrainArgs {
    fn common(&self) -> &LoopArgs {
        &self.common
    }
    fn common_mut(&mut self) -> &mut LoopArgs {
        &mut self.common
    }
}

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
    // Losses in f32 whatever the compute precision.
    let logits = logits.to_dtype(candle_core::DType::F32)?;
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
    path: &Location,
    limit: usize,
    max_len: usize,
    seed: u64,
) -> Result<Vec<String>> {
    let records = read_fasta_location(path, limit, false)?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(records
        .iter()
        .map(|r| random_crop(&r.sequence, max_len, &mut rng))
        .collect())
}

/// The masked-language-model objective: cross-entropy over masked residues.
pub struct MlmObjective {
    model: TrainableModel,
    tokenizer: ProteinTokenizer,
    mask_rate: f64,
    dtype: DType,
    device: Device,
}

impl MlmObjective {
    /// A fresh model of `config` initialised from `seed`, trained with forward passes in
    /// `dtype`.
    pub fn new(
        config: &EsmConfig,
        mask_rate: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            model: TrainableModel::new(config, seed, device)?,
            tokenizer: ProteinTokenizer::esm(),
            mask_rate,
            dtype,
            device: device.clone(),
        })
    }
}

impl Objective for MlmObjective {
    type Batch = MaskedBatch;

    fn term_names(&self) -> &'static [&'static str] {
        &[]
    }

    fn prepare(&self, sequences: &[String], rng: &mut StdRng) -> Result<(MaskedBatch, Counts)> {
        let batch = mask_batch(sequences, &self.tokenizer, self.mask_rate, rng);
        let counts = Counts {
            masked: batch.target_ids.len(),
            residues: sequences.iter().map(String::len).sum(),
        };
        Ok((batch, counts))
    }

    fn loss(&self, batch: &MaskedBatch, global: &Counts) -> Result<(Tensor, Vec<f64>)> {
        if global.masked == 0 {
            bail!("no masked positions in the batch");
        }
        let (mean, n) = mlm_loss(&self.model.network(self.dtype)?, batch, &self.device)?;
        Ok(((mean * (n as f64 / global.masked as f64))?, Vec::new()))
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.model.named_vars()
    }

    fn model(&self) -> &TrainableModel {
        &self.model
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        self.model
            .load_weights(&dir.join(plm_model::checkpoint::files::WEIGHTS))
    }

    fn validate(&self, sequences: &[String], args: &LoopArgs) -> Result<Vec<(String, f64)>> {
        let ppl = perplexity(
            &self.model.model,
            &self.tokenizer,
            sequences,
            args.max_tokens,
            args.seed,
            &self.device,
        )?;
        Ok(vec![
            ("valid_loss".into(), ppl.ln()),
            ("valid_perplexity".into(), ppl),
        ])
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "objective": format!(
                "masked language modelling ({}% selected; 80/10/10)",
                self.mask_rate * 100.0
            ),
        })
    }
}

/// Loads the validation set of a run, if it has one.
pub fn load_run_validation(args: &LoopArgs) -> Result<Option<Vec<String>>> {
    args.valid
        .as_ref()
        .map(|p| load_validation(p, args.valid_sequences, args.max_len, args.seed))
        .transpose()
}

/// Runs (or resumes) pretraining on the process group `comm`.
pub fn run(
    args: PretrainArgs,
    resume: bool,
    device: &Device,
    comm: &dyn Communicator,
) -> Result<()> {
    let (state, run) = train_loop::open_run(args, resume, comm)?;
    let args = state.args.clone();
    let config = EsmConfig::esm2(
        args.hidden,
        args.layers,
        args.heads,
        args.intermediate.unwrap_or(4 * args.hidden),
    );
    config.validate().map_err(anyhow::Error::msg)?;
    let c = &args.common;
    c.dtype.warn_if_slow(device, comm);
    let mut objective = MlmObjective::new(&config, c.mask_rate, c.seed, c.dtype.dtype(), device)?;
    let valid = load_run_validation(&args.common)?;
    train_loop::train(&run, state, &mut objective, valid.as_deref(), comm)?;
    Ok(())
}
