//! The training loop shared by every task head: mini-batches over a seeded shuffle, AdamW,
//! validation after each epoch, early stopping that restores the best weights.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Hyper-parameters of head training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadTraining {
    /// Most passes over the training set.
    pub epochs: usize,
    /// Items per optimisation step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Shuffle seed.
    pub seed: u64,
}

/// What a training run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    /// Epochs run.
    pub epochs: usize,
    /// Epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Validation score of the kept weights (higher is better).
    pub best_validation: f64,
    /// Mean training loss of each epoch.
    pub losses: Vec<f64>,
}

fn snapshot(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    vars.iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect()
}

/// Re-initialises the head variables from `seed` (weights uniform in ±1/√fan-in, biases 0,
/// norm scales 1), so head training does not depend on candle's unseeded RNG.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    use rand::Rng;
    crate::model_init::seeded_init(varmap, seed, |shape, rng| {
        let fan_in = shape.dims().last().copied().unwrap_or(1).max(1) as f32;
        let bound = 1.0 / fan_in.sqrt();
        (0..shape.elem_count())
            .map(|_| rng.random_range(-bound..bound))
            .collect()
    })
}

/// Trains the variables of `varmap`: `loss(batch)` returns the mean loss of a batch of item
/// indices; `validate()` returns a score where higher is better.
pub fn train_head(
    what: &str,
    varmap: &VarMap,
    config: &HeadTraining,
    items: usize,
    mut loss: impl FnMut(&[usize]) -> Result<Tensor>,
    mut validate: impl FnMut() -> Result<f64>,
) -> Result<TrainReport> {
    let vars = crate::model_init::vars_by_name(varmap)?;
    let mut optimizer = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: config.lr,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;
    seeded_init(varmap, config.seed)?;
    plm_model::gnn::seed_dropout(config.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..items).collect();
    let mut report = TrainReport {
        epochs: 0,
        best_epoch: 0,
        best_validation: f64::NEG_INFINITY,
        losses: Vec::new(),
    };
    let mut best = snapshot(&vars)?;
    let steps = items.div_ceil(config.batch_size.max(1));
    for epoch in 1..=config.epochs {
        order.shuffle(&mut rng);
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let mut total = 0.0;
        for (k, batch) in order.chunks(config.batch_size.max(1)).enumerate() {
            let l = loss(batch)?;
            optimizer.backward_step(&l)?;
            total += l.to_scalar::<f32>()? as f64;
            if k % 10 == 0 {
                bar.set_message(format!(
                    "{what} epoch {epoch} loss {:.4}",
                    total / (k + 1) as f64
                ));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mean_loss = total / steps.max(1) as f64;
        let score = validate()?;
        report.epochs = epoch;
        report.losses.push(mean_loss);
        eprintln!("{what}: epoch {epoch}: loss {mean_loss:.4}, validation {score:.4}");
        if score > report.best_validation {
            report.best_validation = score;
            report.best_epoch = epoch;
            best = snapshot(&vars)?;
        } else if epoch - report.best_epoch >= config.patience {
            break;
        }
    }
    for (name, var) in &vars {
        if let Some(t) = best.get(name) {
            var.set(t)?;
        }
    }
    Ok(report)
}

/// Mean binary cross-entropy with logits over the entries where `mask` is 1:
/// `max(x, 0) − x·t + log(1 + e^{−|x|})`, numerically stable.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let per = ((logits.relu()? - (logits * targets)?)?
        + ((logits.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    Ok(match mask {
        Some(m) => {
            let count = m.sum_all()?.to_scalar::<f32>()?.max(1.0);
            ((per * m)?.sum_all()? / count as f64)?
        }
        None => per.mean_all()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_the_definition() {
        let x = Tensor::new(&[2.0f32, -1.0, 0.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1.0f32, 0.0, 1.0], &Device::Cpu).unwrap();
        let got = bce_with_logits(&x, &t, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = -((s(2.0)).ln() + (1.0 - s(-1.0)).ln() + s(0.0).ln()) / 3.0;
        assert!((got - want).abs() < 1e-6, "{got} {want}");
        let m = Tensor::new(&[1.0f32, 0.0, 0.0], &Device::Cpu).unwrap();
        let got = bce_with_logits(&x, &t, Some(&m))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got + s(2.0).ln()).abs() < 1e-6);
    }
}
