//! `plm-train`: trains the checkpoints the extension loads.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use plm_model::{Checkpoint, DeviceSpec};
use plm_train::storage::{self, Location};
use plm_train::{comm, distill, plot, pretrain};

#[derive(Parser)]
#[command(
    name = "plm-train",
    version,
    about = "Train protein language models and task heads for pg_plm"
)]
struct Cli {
    /// Device: cpu, cuda, cuda:N. Pretrain, distill and eval train or evaluate there; finetune
    /// and homology run the language model there (features, and the contact regression over
    /// its attention maps; the task heads are fitted on the CPU); the other commands run on
    /// the CPU only.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Masked-language-model pretraining of an ESM-2-architecture model.
    Pretrain {
        #[command(flatten)]
        args: pretrain::PretrainArgs,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Knowledge distillation of a smaller student from a teacher checkpoint.
    Distill {
        #[command(flatten)]
        args: distill::DistillArgs,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Fit the contact head and the task heads (EC, GO, interaction, binding sites) on a model's
    /// frozen features, evaluate them on held-out data with baselines, and write a deployable
    /// directory.
    Finetune {
        #[command(flatten)]
        args: plm_train::finetune::FinetuneArgs,
    },
    /// Build the labelled reference sets of homology transfer (models/reference) from the
    /// shared data.
    Reference {
        #[command(flatten)]
        args: plm_train::reference::ReferenceArgs,
    },
    /// Evaluate a model's task heads (function, interaction, binding sites), homology transfer
    /// and their blend on a held-out and a random split; write the blend weights fitted on
    /// validation into its heads.json.
    Homology {
        #[command(flatten)]
        args: plm_train::homology_eval::HomologyArgs,
    },
    /// Fit the protein-interface prior of supplied structures (C-alpha burial and patches) on
    /// GraphPPIS Train_335 and its blend with the binding GNN; write it into the model's
    /// heads.json.
    InterfacePrior {
        #[command(flatten)]
        args: plm_train::interface_prior::InterfacePriorArgs,
    },
    /// Install a model at a lower precision (int8) as a model of its own, only if it passes the
    /// quality gates against the f32 model (embedding cosine, nearest neighbours, perplexity).
    Quantize {
        #[command(flatten)]
        args: plm_train::quantize::QuantizeArgs,
    },
    /// Redraw RUN/loss.png from RUN/metrics.jsonl.
    Plot {
        /// Run directory.
        run: PathBuf,
    },
    /// Masked-LM perplexity of a checkpoint on a FASTA file.
    Eval {
        /// Checkpoint directory (path or s3:// URL).
        #[arg(long)]
        model: Location,
        /// FASTA (.gz allowed; path or s3:// URL).
        #[arg(long)]
        data: Location,
        /// Sequences used.
        #[arg(long, default_value_t = 2000)]
        sequences: usize,
        /// Longest crop.
        #[arg(long, default_value_t = 1022)]
        max_len: usize,
        /// Seed of crops and masks.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Copy the deployable files of a checkpoint (config, weights, tokenizer, manifest) into a
    /// model directory, leaving training state behind, and verify that it loads.
    Export {
        /// Checkpoint directory, e.g. RUN/last (a path, or s3://bucket/run/last).
        #[arg(long)]
        from: Location,
        /// Destination model directory, e.g. models/plm-default.
        #[arg(long)]
        to: PathBuf,
    },
    /// Print a checkpoint's manifest.
    Inspect {
        /// Checkpoint directory.
        model: PathBuf,
    },
}

/// Whether the subcommand's `--steps` was typed on the command line (not its default).
fn steps_given(matches: &clap::ArgMatches) -> bool {
    matches
        .subcommand()
        // Not every subcommand has --steps (asking clap about an unknown id panics).
        .filter(|(_, m)| m.ids().any(|id| id == "steps"))
        .and_then(|(_, m)| m.value_source("steps"))
        .is_some_and(|source| source == ValueSource::CommandLine)
}

fn main() -> Result<()> {
    let matches = Cli::command().get_matches();
    let given = steps_given(&matches);
    let cli = Cli::from_arg_matches(&matches)?;
    let spec = cli.device.parse::<DeviceSpec>()?;
    let device = || spec.open();
    let cpu_only = |command: &str| -> Result<()> {
        anyhow::ensure!(
            spec == DeviceSpec::Cpu,
            "`{command}` runs on the CPU only; drop --device {spec} (it applies to pretrain, distill, eval, finetune and homology)"
        );
        Ok(())
    };
    match cli.command {
        Command::Pretrain { mut args, resume } => {
            args.common.steps_given = given;
            let comm = comm::from_environment()?;
            pretrain::run(args, resume, &device()?, comm.as_ref())
        }
        Command::Distill { mut args, resume } => {
            args.common.steps_given = given;
            let comm = comm::from_environment()?;
            distill::run(args, resume, &device()?, comm.as_ref())
        }
        Command::Finetune { args } => plm_train::finetune::run(args, spec),
        Command::Reference { args } => {
            cpu_only("reference")?;
            plm_train::reference::run(&args)
        }
        Command::Homology { args } => plm_train::homology_eval::run(&args, spec),
        Command::InterfacePrior { args } => {
            cpu_only("interface-prior")?;
            plm_train::interface_prior::run(&args)
        }
        Command::Quantize { args } => {
            cpu_only("quantize")?;
            plm_train::quantize::run(&args)
        }
        Command::Plot { run } => {
            cpu_only("plot")?;
            let png =
                plot::plot_run(&run).with_context(|| format!("plotting {}", run.display()))?;
            println!("{}", png.display());
            Ok(())
        }
        Command::Eval {
            model,
            data,
            sequences,
            max_len,
            seed,
        } => {
            let dir =
                storage::local_model_dir(&model, 0).with_context(|| format!("fetching {model}"))?;
            let ckpt = Checkpoint::open(&dir).with_context(|| format!("opening {model}"))?;
            let device = device()?;
            let net = ckpt.load_model(&device, candle_core::DType::F32)?;
            let seqs = pretrain::load_validation(&data, sequences, max_len, seed)?;
            let ppl = pretrain::perplexity(&net, &ckpt.tokenizer, &seqs, 16384, seed, &device)?;
            println!(
                "{}",
                serde_json::json!({"model": ckpt.name(), "data": data.to_string(),
                    "sequences": seqs.len(), "perplexity": ppl})
            );
            Ok(())
        }
        Command::Export { from, to } => {
            cpu_only("export")?;
            use plm_model::checkpoint::files;
            let source = from;
            let from = storage::local_model_dir(&source, 0)
                .with_context(|| format!("fetching {source}"))?;
            let ckpt = Checkpoint::open(&from).with_context(|| format!("opening {source}"))?;
            std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
            for name in [
                files::CONFIG,
                files::WEIGHTS,
                files::TOKENIZER,
                files::MANIFEST,
            ] {
                let src = from.join(name);
                if src.is_file() {
                    std::fs::copy(&src, to.join(name))
                        .with_context(|| format!("copying {}", src.display()))?;
                }
            }
            let copied =
                Checkpoint::open(&to).with_context(|| format!("verifying {}", to.display()))?;
            anyhow::ensure!(
                copied.fingerprint == ckpt.fingerprint,
                "fingerprint changed while copying"
            );
            println!("{}", serde_json::to_string_pretty(&copied.describe())?);
            Ok(())
        }
        Command::Inspect { model } => {
            cpu_only("inspect")?;
            let ckpt =
                Checkpoint::open(&model).with_context(|| format!("opening {}", model.display()))?;
            println!("{}", serde_json::to_string_pretty(&ckpt.describe())?);
            Ok(())
        }
    }
}
