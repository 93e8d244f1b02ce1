//! AdamW with decoupled weight decay whose state can be saved and restored (candle's own
//! optimizer keeps its moments private), learning-rate schedule and gradient clipping.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (not applied to biases and norms).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// Optimises `vars` (name, variable), sorted by name for a stable order.
    pub fn new(mut vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            config,
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The optimised variables.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The gradients of the optimised variables, in their order.
    pub fn gradients(&self, store: &GradStore) -> Vec<Option<Tensor>> {
        self.vars
            .iter()
            .map(|(_, v)| store.get(v).cloned())
            .collect()
    }

    /// One update with learning rate `lr`, gradients (in [`AdamW::vars`] order) scaled by
    /// `grad_scale` (clipping, averaging).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let g = (g * grad_scale)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let decay = var.rank() >= 2 && !name.contains("embeddings");
            let mut w = var.as_tensor().clone();
            if decay && c.weight_decay > 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            var.set(&(w - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Saves moments and step to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            map.insert(format!("m.{name}"), self.m[i].clone());
            map.insert(format!("v.{name}"), self.v[i].clone());
        }
        map.insert(
            "step".into(),
            Tensor::new(&[self.step as u32], &candle_core::Device::Cpu)?,
        );
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Restores what [`AdamW::save`] wrote.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("reading {}", path.display()))?;
        for (i, (name, _)) in self.vars.iter().enumerate() {
            self.m[i] = map
                .get(&format!("m.{name}"))
                .with_context(|| format!("{}: no state for {name}", path.display()))?
                .clone();
            self.v[i] = map
                .get(&format!("v.{name}"))
                .with_context(|| format!("{}: no state for {name}", path.display()))?
                .clone();
        }
        self.step = map
            .get("step")
            .context("optimizer state has no step")?
            .to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

/// Global L2 norm of a set of gradients.
pub fn grad_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Adds `more` into `acc` element-wise (gradient accumulation).
pub fn accumulate(acc: &mut Vec<Option<Tensor>>, more: Vec<Option<Tensor>>) -> Result<()> {
    if acc.is_empty() {
        *acc = more;
        return Ok(());
    }
    for (a, m) in acc.iter_mut().zip(more) {
        *a = match (a.take(), m) {
            (Some(x), Some(y)) => Some((x + y)?),
            (x, y) => x.or(y),
        };
    }
    Ok(())
}

/// Linear warm-up to `peak`, then cosine decay to `peak × final_fraction` at `total` steps.
pub fn learning_rate(
    step: usize,
    warmup: usize,
    total: usize,
    peak: f64,
    final_fraction: f64,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = ((step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64).min(1.0);
    let floor = peak * final_fraction;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((learning_rate(0, 10, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 10, 100, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 10, 100, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(100, 10, 100, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!(learning_rate(50, 10, 100, 1.0, 0.1) < 1.0);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_state_round_trips() {
        let dev = candle_core::Device::Cpu;
        let x = Var::new(&[3.0f32, -2.0], &dev).unwrap();
        let mut opt = AdamW::new(vec![("x".into(), x.clone())], AdamWConfig::default()).unwrap();
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = opt.gradients(&loss.backward().unwrap());
            opt.step(&grads, 0.05, 1.0).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        let mut other = AdamW::new(vec![("x".into(), x.clone())], AdamWConfig::default()).unwrap();
        other.load(&path).unwrap();
        assert_eq!(other.step_count(), 300);
    }
}
