//! `plm-train distill`: a smaller ESM-2 student learns from a teacher checkpoint.
//!
//! loss = α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) over residue positions
//!      + β·MSE(student_hidden·Wᵀ, teacher_hidden) over matched layers and residues
//!      + γ·cross-entropy on the masked residues (MLM).
//!
//! The trainable projection W maps student width to teacher width (as in TinyBERT): projecting
//! the fixed teacher states instead would let W → 0 and shrinking student states drive the
//! term to zero. Student block `k` (1-based) is matched with teacher block `round(k·Lt/Ls)`, so
//! the last blocks (after the final layer norm) always meet. W lives in `RUN/last/aux.safetensors`
//! for resumption and is not part of the saved model, a plain ESM-2 checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::ops::log_softmax;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use plm_model::batching::plan_batches;
use plm_model::checkpoint::read_json;
use plm_model::esm::ForwardOptions;
use plm_model::{Checkpoint, EsmConfig, EsmForMaskedLM, ProteinTokenizer};

use crate::comm::Communicator;
use crate::masking::{mask_batch, MaskedBatch};
use crate::model_init::TrainableModel;
use crate::pretrain::load_run_validation;
use crate::storage::{self, Location};
use crate::train_loop::{self, evaluate, Counts, LoopArgs, Objective, RunArgs, AUX};

/// Hyper-parameters of a distillation run (stored in the run so `--resume` needs no flags).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct DistillArgs {
    /// Data, schedule, batching and checkpointing.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: LoopArgs,
    /// Teacher checkpoint directory.
    #[arg(long)]
    pub teacher: Location,
    /// Student config.json (instead of --student-layers/--student-hidden/...).
    #[arg(long)]
    pub student_config: Option<PathBuf>,
    /// Student blocks (default: half the teacher's).
    #[arg(long = "student-layers")]
    pub layers: Option<usize>,
    /// Student width (default: the teacher's).
    #[arg(long = "student-hidden")]
    pub hidden: Option<usize>,
    /// Student attention heads (default: the teacher's).
    #[arg(long = "student-heads")]
    pub heads: Option<usize>,
    /// Student feed-forward width (default: the teacher's at equal width, else 4 × width).
    #[arg(long = "student-intermediate")]
    pub intermediate: Option<usize>,
    /// Softmax temperature T of the soft targets.
    #[arg(long, default_value_t = 2.0)]
    pub temperature: f64,
    /// Weight α of the KL term (multiplied by T²).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Weight β of the hidden-state MSE term.
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,
    /// Weight γ of the masked-LM cross-entropy on the true residues.
    #[arg(long, default_value_t = 0.0)]
    pub mlm_weight: f64,
}

impl RunArgs for DistillArgs {
    fn common(&self) -> &LoopArgs {
        &self.common
    }
    fn common_mut(&mut self) -> &mut LoopArgs {
        &mut self.common
    }
}

/// The student's configuration: `--student-config`, else the teacher's with the given shape.
pub fn student_config(args: &DistillArgs, teacher: &EsmConfig) -> Result<EsmConfig> {
    let config = match &args.student_config {
        Some(path) => read_json::<EsmConfig>(path)
            .with_context(|| format!("reading student config {}", path.display()))?,
        None => {
            let mut c = teacher.clone();
            c.num_hidden_layers = args
                .layers
                .unwrap_or((teacher.num_hidden_layers / 2).max(1));
            c.hidden_size = args.hidden.unwrap_or(teacher.hidden_size);
            c.num_attention_heads = args.heads.unwrap_or(teacher.num_attention_heads);
            c.intermediate_size =
                args.intermediate
                    .unwrap_or(if c.hidden_size == teacher.hidden_size {
                        teacher.intermediate_size
                    } else {
                        4 * c.hidden_size
                    });
            c
        }
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("student config: {e}"))?;
    if config.vocab_size != teacher.vocab_size {
        bail!(
            "student vocabulary ({}) differs from the teacher's ({})",
            config.vocab_size,
            teacher.vocab_size
        );
    }
    Ok(config)
}

/// Teacher block matched with each student block `1..=student_layers`.
pub fn matched_layers(student_layers: usize, teacher_layers: usize) -> Vec<usize> {
    (1..=student_layers)
        .map(|k| ((k * teacher_layers) as f64 / student_layers as f64).round() as usize)
        .map(|t| t.clamp(1, teacher_layers))
        .collect()
}

/// Name of the same tensor in the teacher for a student variable: block `j` reads teacher
/// block `j·Lt/Ls` (every k-th block); other names are unchanged.
fn teacher_name(name: &str, student_layers: usize, teacher_layers: usize) -> String {
    const LAYER: &str = "encoder.layer.";
    let Some(at) = name.find(LAYER) else {
        return name.to_string();
    };
    let rest = &name[at + LAYER.len()..];
    let Some((index, tail)) = rest.split_once('.') else {
        return name.to_string();
    };
    match index.parse::<usize>() {
        Ok(j) => format!(
            "{}{LAYER}{}.{tail}",
            &name[..at],
            j * teacher_layers / student_layers.max(1)
        ),
        Err(_) => name.to_string(),
    }
}

/// The student initialised from `seed`, then, where the widths match, from the teacher's
/// weights of the same shape (blocks every k-th). Returns it and how many tensors were copied.
pub fn init_student(
    teacher_dir: &Path,
    teacher_config: &EsmConfig,
    config: &EsmConfig,
    seed: u64,
    device: &Device,
) -> Result<(TrainableModel, usize)> {
    let student = TrainableModel::new(config, seed, device)?;
    if config.hidden_size != teacher_config.hidden_size {
        return Ok((student, 0));
    }
    let path = teacher_dir.join(plm_model::checkpoint::files::WEIGHTS);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut copied = 0;
    for (name, var) in student.named_vars() {
        let base = teacher_name(
            &name,
            config.num_hidden_layers,
            teacher_config.num_hidden_layers,
        );
        let bare = base.strip_prefix("esm.").unwrap_or(&base).to_string();
        let gamma = |n: &str| n.replace(".weight", ".gamma").replace(".bias", ".beta");
        let found = [base.clone(), bare.clone(), gamma(&base), gamma(&bare)]
            .iter()
            .find_map(|n| tensors.get(n))
            .filter(|t| t.shape() == var.shape());
        if let Some(t) = found {
            var.set(&t.to_device(device)?.to_dtype(var.dtype())?)?;
            copied += 1;
        }
    }
    Ok((student, copied))
}

/// A prepared micro-batch: masked inputs and the flat indices of its residue positions.
pub struct DistillBatch {
    masked: MaskedBatch,
    residues: Vec<u32>,
}

/// Name of the projection among the trained tensors.
pub const PROJECTION: &str = "distill.projection.weight";

/// The distillation objective.
pub struct DistillObjective {
    teacher: EsmForMaskedLM,
    teacher_layers: Vec<usize>,
    student: TrainableModel,
    student_layers: Vec<usize>,
    projection: Var,
    tokenizer: ProteinTokenizer,
    args: DistillArgs,
    teacher_name: String,
    teacher_fingerprint: String,
    device: Device,
}

impl DistillObjective {
    /// Loads the teacher from `teacher_dir` (`args.teacher`, downloaded when it is a URL) and
    /// builds the student and projection for `args`.
    pub fn new(args: &DistillArgs, teacher_dir: &Path, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::open(teacher_dir)
            .with_context(|| format!("opening teacher {}", args.teacher))?;
        let dtype = args.common.dtype.dtype();
        let teacher = ckpt.load_model(device, dtype)?;
        if !teacher.has_lm_head() {
            bail!(
                "teacher {} has no LM head: distillation needs its logits",
                args.teacher
            );
        }
        let tokenizer = ProteinTokenizer::esm();
        if ckpt.tokenizer.vocab_size() != tokenizer.vocab_size() {
            bail!("teacher vocabulary is not ESM-2's");
        }
        let config = student_config(args, &ckpt.config)?;
        let (student, copied) =
            init_student(teacher_dir, &ckpt.config, &config, args.common.seed, device)?;
        eprintln!(
            "student: {} blocks × {} wide ({} parameters), {copied} tensors initialised from the teacher",
            config.num_hidden_layers,
            config.hidden_size,
            config.parameter_count()
        );
        let (hs, ht) = (config.hidden_size, ckpt.config.hidden_size);
        let w = if hs == ht {
            Tensor::eye(hs, DType::F32, device)?
        } else {
            let mut rng = StdRng::seed_from_u64(args.common.seed ^ 0x0D15_7111);
            let normal = Normal::new(0f32, (1.0 / hs as f32).sqrt()).context("normal")?;
            let data: Vec<f32> = (0..hs * ht).map(|_| normal.sample(&mut rng)).collect();
            Tensor::from_vec(data, (ht, hs), device)?
        };
        Ok(Self {
            teacher_layers: matched_layers(config.num_hidden_layers, ckpt.config.num_hidden_layers),
            student_layers: (1..=config.num_hidden_layers).collect(),
            teacher,
            student,
            projection: Var::from_tensor(&w)?,
            tokenizer,
            args: args.clone(),
            teacher_name: ckpt.name(),
            teacher_fingerprint: ckpt.fingerprint.clone(),
            device: device.clone(),
        })
    }
}

/// Flat indices (row × tokens + column) of the residues of a padded batch.
fn residue_positions(batch: &MaskedBatch) -> Vec<u32> {
    let mut out = Vec::new();
    for r in 0..batch.batch {
        let row = &batch.attention_mask[r * batch.tokens..(r + 1) * batch.tokens];
        let len = row.iter().filter(|&&m| m == 1).count();
        out.extend((1..len.saturating_sub(1)).map(|c| (r * batch.tokens + c) as u32));
    }
    out
}

/// Rows of a `(batch, tokens, dim)` tensor at flat `positions`: `(positions, dim)`.
fn gather(t: &Tensor, positions: &Tensor) -> candle_core::Result<Tensor> {
    let (b, l, d) = t.dims3()?;
    t.reshape((b * l, d))?.index_select(positions, 0)
}

/// Σ over rows of KL(softmax(teacher/T) ‖ softmax(student/T)), rows being positions.
fn kl_sum(teacher: &Tensor, student: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let t_logp = log_softmax(&(teacher / temperature)?, D::Minus1)?;
    let s_logp = log_softmax(&(student / temperature)?, D::Minus1)?;
    (t_logp.exp()? * (t_logp - s_logp)?)?.sum_all()
}

fn batch_inputs(b: &MaskedBatch, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    Ok((
        Tensor::from_vec(b.input_ids.clone(), (b.batch, b.tokens), device)?,
        Tensor::from_vec(b.attention_mask.clone(), (b.batch, b.tokens), device)?,
    ))
}

impl Objective for DistillObjective {
    type Batch = DistillBatch;

    fn term_names(&self) -> &'static [&'static str] {
        &["kl", "hidden_mse", "mlm"]
    }

    fn prepare(&self, sequences: &[String], rng: &mut StdRng) -> Result<(DistillBatch, Counts)> {
        let masked = mask_batch(sequences, &self.tokenizer, self.args.common.mask_rate, rng);
        let residues = residue_positions(&masked);
        let counts = Counts {
            masked: masked.target_ids.len(),
            residues: residues.len(),
        };
        Ok((DistillBatch { masked, residues }, counts))
    }

    fn loss(&self, b: &DistillBatch, global: &Counts) -> Result<(Tensor, Vec<f64>)> {
        if global.residues == 0 || global.masked == 0 {
            bail!("empty batch");
        }
        let dev = &self.device;
        let (ids, mask) = batch_inputs(&b.masked, dev)?;
        let t_out = self.teacher.forward(
            &ids,
            &mask,
            &ForwardOptions {
                layers: self.teacher_layers.clone(),
                logits: true,
                contacts: false,
            },
        )?;
        let dtype = self.args.common.dtype.dtype();
        let s_out = self.student.network(dtype)?.forward(
            &ids,
            &mask,
            &ForwardOptions {
                layers: self.student_layers.clone(),
                logits: true,
                contacts: false,
            },
        )?;
        let (Some(t_logits), Some(s_logits)) = (&t_out.logits, &s_out.logits) else {
            bail!("a model returned no logits");
        };
        // Losses in f32 whatever the compute precision.
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let (t_logits, s_logits) = (&f32(t_logits)?, &f32(s_logits)?);
        let positions = Tensor::new(b.residues.as_slice(), dev)?;
        let n_res = global.residues as f64;
        let t = self.args.temperature;
        let kl = (kl_sum(
            &gather(t_logits, &positions)?.detach(),
            &gather(s_logits, &positions)?,
            t,
        )? / n_res)?;

        let w = self.projection.as_tensor().t()?;
        let ht = self.teacher.config().hidden_size;
        let per_layer = n_res * ht as f64 * self.student_layers.len() as f64;
        let mut mse = Tensor::zeros((), DType::F32, dev)?;
        for ((_, s), (_, th)) in s_out.hidden.iter().zip(&t_out.hidden) {
            let projected = f32(&gather(s, &positions)?)?.matmul(&w)?;
            let diff = (projected - f32(&gather(th, &positions)?)?.detach())?;
            mse = (mse + (diff.sqr()?.sum_all()? / per_layer)?)?;
        }

        let mlm = {
            let targets = Tensor::new(b.masked.target_positions.as_slice(), dev)?;
            let (bs, l, v) = s_logits.dims3()?;
            let picked = s_logits.reshape((bs * l, v))?.index_select(&targets, 0)?;
            let labels = Tensor::new(b.masked.target_ids.as_slice(), dev)?;
            let n = b.masked.target_ids.len() as f64;
            (candle_nn::loss::cross_entropy(&picked, &labels)? * (n / global.masked as f64))?
        };
        let a = &self.args;
        let total = (((&kl * (a.alpha * t * t))? + (&mse * a.beta)?)? + (&mlm * a.mlm_weight)?)?;
        let terms = [&kl, &mse, &mlm]
            .iter()
            .map(|x| x.to_scalar::<f32>().map(f64::from))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((total, terms))
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        let mut vars = self.student.named_vars();
        vars.push((PROJECTION.into(), self.projection.clone()));
        vars
    }

    fn model(&self) -> &TrainableModel {
        &self.student
    }

    fn aux_tensors(&self) -> HashMap<String, Tensor> {
        HashMap::from([(PROJECTION.into(), self.projection.as_tensor().clone())])
    }

    fn restore(&mut self, dir: &Path) -> Result<()> {
        self.student
            .load_weights(&dir.join(plm_model::checkpoint::files::WEIGHTS))?;
        let path = dir.join(AUX);
        let aux = candle_core::safetensors::load(&path, &self.device)
            .with_context(|| format!("reading {}", path.display()))?;
        let w = aux
            .get(PROJECTION)
            .with_context(|| format!("{}: no {PROJECTION}", path.display()))?;
        self.projection.set(w)?;
        Ok(())
    }

    fn validate(&self, sequences: &[String], args: &LoopArgs) -> Result<Vec<(String, f64)>> {
        let (loss, terms) = evaluate(self, sequences, args.max_tokens, args.seed)?;
        Ok(vec![
            ("valid_loss".into(), loss),
            ("valid_kl".into(), terms[0]),
            ("valid_hidden_mse".into(), terms[1]),
            ("valid_perplexity".into(), terms[2].exp()),
        ])
    }

    fn describe(&self) -> serde_json::Value {
        let a = &self.args;
        serde_json::json!({
            "objective": "knowledge distillation (α·T²·KL + β·hidden MSE + γ·MLM)",
            "teacher": self.teacher_name,
            "teacher_fingerprint": self.teacher_fingerprint,
            "temperature": a.temperature,
            "alpha": a.alpha,
            "beta": a.beta,
            "mlm_weight": a.mlm_weight,
            "matched_teacher_layers": self.teacher_layers,
        })
    }
}

/// Mean KL(teacher ‖ student) per residue at temperature `temperature`, on unmasked sequences.
pub fn kl_divergence(
    teacher: &EsmForMaskedLM,
    student: &EsmForMaskedLM,
    sequences: &[String],
    temperature: f64,
    max_tokens: usize,
    device: &Device,
) -> Result<f64> {
    let tokenizer = ProteinTokenizer::esm();
    let lengths: Vec<usize> = sequences.iter().map(String::len).collect();
    let (mut total, mut count) = (0f64, 0usize);
    for batch in plan_batches(&lengths, max_tokens) {
        let seqs: Vec<String> = batch.iter().map(|&i| sequences[i].clone()).collect();
        // Mask rate 0 still selects one residue per sequence; inputs stay unmasked here.
        let mut b = mask_batch(&seqs, &tokenizer, 0.0, &mut StdRng::seed_from_u64(0));
        for (&p, &id) in b.target_positions.iter().zip(&b.target_ids) {
            b.input_ids[p as usize] = id;
        }
        let positions = residue_positions(&b);
        let (ids, mask) = batch_inputs(&b, device)?;
        let (t_logits, _) = teacher.forward_mlm(&ids, &mask)?;
        let (s_logits, _) = student.forward_mlm(&ids, &mask)?;
        let idx = Tensor::new(positions.as_slice(), device)?;
        let kl = kl_sum(
            &gather(&t_logits, &idx)?,
            &gather(&s_logits, &idx)?,
            temperature,
        )?;
        total += kl.to_scalar::<f32>()? as f64;
        count += positions.len();
    }
    if count == 0 {
        bail!("no residues");
    }
    Ok(total / count as f64)
}

/// Runs (or resumes) distillation on the process group `comm`.
pub fn run(
    args: DistillArgs,
    resume: bool,
    device: &Device,
    comm: &dyn Communicator,
) -> Result<()> {
    let (state, run) = train_loop::open_run(args, resume, comm)?;
    let args = state.args.clone();
    if args.temperature <= 0.0 {
        bail!("--temperature must be positive");
    }
    args.common.dtype.warn_if_slow(device, comm);
    let teacher_dir = storage::local_model_dir(&args.teacher, comm.rank())
        .with_context(|| format!("fetching teacher {}", args.teacher))?;
    let mut objective = DistillObjective::new(&args, &teacher_dir, device)?;
    let valid = load_run_validation(&args.common)?;
    train_loop::train(&run, state, &mut objective, valid.as_deref(), comm)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_matched_and_renamed_every_kth() {
        assert_eq!(matched_layers(3, 6), vec![2, 4, 6]);
        assert_eq!(matched_layers(2, 6), vec![3, 6]);
        assert_eq!(matched_layers(1, 4), vec![4]);
        assert_eq!(matched_layers(4, 4), vec![1, 2, 3, 4]);
        assert_eq!(
            teacher_name("esm.encoder.layer.2.attention.self.query.weight", 3, 6),
            "esm.encoder.layer.4.attention.self.query.weight"
        );
        assert_eq!(
            teacher_name("esm.encoder.layer.1.output.dense.bias", 2, 4),
            "esm.encoder.layer.2.output.dense.bias"
        );
        assert_eq!(teacher_name("lm_head.bias", 3, 6), "lm_head.bias");
    }
}
