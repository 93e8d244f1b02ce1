//! AdamW with decoupled weight decay whose state can be saved and restored (candle's own
//! optimizer keeps its moments private), learning-rate schedule and gradient clipping.

use std::collections::HashMap;
use std::path::Path;

use std::ops::Range;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

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

/// Where each optimised variable sits in one flat f32 vector (variables sorted by name), padded
/// with zeros so that it splits into `shards` equal slices, one per rank (ZeRO stage 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatLayout {
    /// Start of variable `i` is `offsets[i]`, its end `offsets[i + 1]`.
    offsets: Vec<usize>,
    /// Length after padding: a multiple of `shards`.
    padded: usize,
    shards: usize,
}

impl FlatLayout {
    /// The layout of `vars` split into `shards` slices (1: no sharding).
    pub fn new(vars: &[(String, Var)], shards: usize) -> Self {
        let shards = shards.max(1);
        let mut offsets = vec![0];
        for (_, v) in vars {
            offsets.push(offsets.last().copied().unwrap_or(0) + v.elem_count());
        }
        let total = offsets.last().copied().unwrap_or(0);
        Self {
            offsets,
            padded: total.div_ceil(shards) * shards,
            shards,
        }
    }

    /// Parameters (without padding).
    pub fn total(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Length with padding (what collectives exchange).
    pub fn padded(&self) -> usize {
        self.padded
    }

    /// Slices the vector is split into.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The slice of the padded vector that rank `rank` owns.
    pub fn shard(&self, rank: usize) -> Range<usize> {
        let n = self.padded / self.shards;
        rank * n..(rank + 1) * n
    }

    /// The range of variable `i`.
    pub fn range(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    /// Variables in the layout.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the layout holds no variable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Concatenates per-variable tensors (in layout order; `None`: zeros) into the padded flat
    /// f32 vector on `device`.
    pub fn flatten(
        &self,
        parts: &[Option<Tensor>],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut pieces = Vec::with_capacity(parts.len() + 1);
        for (i, part) in parts.iter().enumerate() {
            let len = self.range(i).len();
            pieces.push(match part {
                Some(t) => t.flatten_all()?.to_dtype(DType::F32)?,
                None => Tensor::zeros(len, DType::F32, device)?,
            });
        }
        if self.padded > self.total() {
            pieces.push(Tensor::zeros(
                self.padded - self.total(),
                DType::F32,
                device,
            )?);
        }
        Tensor::cat(&pieces, 0)
    }
}

/// AdamW over named variables, holding the moments of one slice of the flat parameter vector:
/// all of it on one rank, `1/ranks` of it per rank with ZeRO stage 1 (`--shard-optimizer`).
/// The update is element-wise, so a shard's result does not depend on how the vector is split.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    layout: FlatLayout,
    shard: Range<usize>,
    /// First and second moments of the shard.
    m: Tensor,
    v: Tensor,
    /// 1 where decoupled weight decay applies (matrices other than embeddings), else 0.
    decay: Tensor,
    step: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// Optimises `vars` (name, variable), sorted by name for a stable order; this rank keeps the
    /// moments of slice `rank` of `shards` (`shards` 1: all of them).
    pub fn new(
        mut vars: Vec<(String, Var)>,
        config: AdamWConfig,
        shards: usize,
        rank: usize,
    ) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let device = vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let layout = FlatLayout::new(&vars, shards);
        if rank >= layout.shards() {
            bail!("rank {rank} of {} shards", layout.shards());
        }
        let shard = layout.shard(rank);
        let mut decay = vec![0f32; layout.padded()];
        for (i, (name, var)) in vars.iter().enumerate() {
            if var.rank() >= 2 && !name.contains("embeddings") {
                decay[layout.range(i)].fill(1.0);
            }
        }
        let decay = Tensor::from_slice(&decay[shard.clone()], shard.len(), &device)?;
        let zeros = Tensor::zeros(shard.len(), DType::F32, &device)?;
        Ok(Self {
            vars,
            layout,
            shard,
            m: zeros.clone(),
            v: zeros,
            decay,
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

    /// Where the variables sit in the flat vector.
    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    /// The slice of the flat vector whose moments this rank holds.
    pub fn shard(&self) -> Range<usize> {
        self.shard.clone()
    }

    /// Bytes of optimizer state this rank holds (both moments).
    pub fn state_bytes(&self) -> usize {
        2 * self.shard.len() * std::mem::size_of::<f32>()
    }

    /// The gradients of the optimised variables, in their order.
    pub fn gradients(&self, store: &GradStore) -> Vec<Option<Tensor>> {
        self.vars
            .iter()
            .map(|(_, v)| store.get(v).cloned())
            .collect()
    }

    /// The current parameters of this rank's shard (without building the whole flat vector).
    fn shard_parameters(&self) -> candle_core::Result<Tensor> {
        let device = self.m.device();
        let mut pieces = Vec::new();
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let r = self.layout.range(i);
            let (start, end) = (r.start.max(self.shard.start), r.end.min(self.shard.end));
            if start < end {
                let flat = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?;
                pieces.push(flat.narrow(0, start - r.start, end - start)?);
            }
        }
        let padding = self
            .shard
            .end
            .saturating_sub(self.layout.total().max(self.shard.start));
        if padding > 0 {
            pieces.push(Tensor::zeros(padding, DType::F32, device)?);
        }
        Tensor::cat(&pieces, 0)
    }

    /// One update of this rank's shard with learning rate `lr`: `grad` is the shard of the
    /// gradient summed over ranks, scaled by `grad_scale` (clipping); `present` says which
    /// variables have a gradient (the others keep their weights and moments). Returns the
    /// updated parameters of the shard, which [`AdamW::set_parameters`] installs once every
    /// shard is gathered.
    pub fn step_shard(
        &mut self,
        grad: &Tensor,
        present: &[bool],
        lr: f64,
        grad_scale: f64,
    ) -> Result<Tensor> {
        self.step += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let w = self.shard_parameters()?;
        let g = (grad * grad_scale)?;
        let m = ((&self.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
        let v = ((&self.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
        let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
        let decayed = if c.weight_decay > 0.0 {
            (&w * self.decay.affine(-lr * c.weight_decay, 1.0)?)?
        } else {
            w.clone()
        };
        let mut new_w = (decayed - (update * lr)?)?;
        let (mut m, mut v) = (m, v);
        if present.iter().any(|p| !p) {
            let keep = self.present_mask(present)?;
            new_w = keep.where_cond(&new_w, &w)?;
            m = keep.where_cond(&m, &self.m)?;
            v = keep.where_cond(&v, &self.v)?;
        }
        self.m = m;
        self.v = v;
        Ok(new_w)
    }

    /// 1 on the shard's elements whose variable has a gradient.
    fn present_mask(&self, present: &[bool]) -> candle_core::Result<Tensor> {
        let mut mask = vec![0u8; self.layout.padded()];
        for (i, &p) in present.iter().enumerate().take(self.layout.len()) {
            if p {
                mask[self.layout.range(i)].fill(1);
            }
        }
        Tensor::from_slice(&mask[self.shard.clone()], self.shard.len(), self.m.device())
    }

    /// Installs the padded flat parameter vector into the variables.
    pub fn set_parameters(&self, flat: &Tensor) -> Result<()> {
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let r = self.layout.range(i);
            let t = flat
                .narrow(0, r.start, r.len())?
                .reshape(var.shape())?
                .to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// This rank's moments (first, second), for gathering the full state into a checkpoint.
    pub fn moments(&self) -> (&Tensor, &Tensor) {
        (&self.m, &self.v)
    }

    /// Saves the full moments (padded flat vectors gathered from every shard) and the step to a
    /// safetensors file, one tensor per variable (`m.NAME`, `v.NAME`): the same file whatever
    /// the number of shards, so a run can resume on a different number of ranks.
    pub fn save_full(&self, m: &Tensor, v: &Tensor, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let r = self.layout.range(i);
            map.insert(
                format!("m.{name}"),
                m.narrow(0, r.start, r.len())?.reshape(var.shape())?,
            );
            map.insert(
                format!("v.{name}"),
                v.narrow(0, r.start, r.len())?.reshape(var.shape())?,
            );
        }
        map.insert(
            "step".into(),
            Tensor::new(&[self.step as u32], &Device::Cpu)?,
        );
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Restores this rank's shard of what [`AdamW::save_full`] wrote.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self.m.device().clone();
        let map = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("reading {}", path.display()))?;
        let moment = |prefix: &str| -> Result<Tensor> {
            let parts = self
                .vars
                .iter()
                .map(|(name, var)| {
                    let t = map
                        .get(&format!("{prefix}.{name}"))
                        .with_context(|| format!("{}: no state for {name}", path.display()))?;
                    if t.shape() != var.shape() {
                        bail!(
                            "{}: state of {name} has shape {:?}, the variable {:?}",
                            path.display(),
                            t.shape(),
                            var.shape()
                        );
                    }
                    Ok(Some(t.clone()))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(self.layout.flatten(&parts, &device)?.narrow(
                0,
                self.shard.start,
                self.shard.len(),
            )?)
        };
        self.m = moment("m")?;
        self.v = moment("v")?;
        self.step = map
            .get("step")
            .context("optimizer state has no step")?
            .to_vec1::<u32>()?[0] as usize;
        Ok(())
    }
}

/// Sum of the squares of a tensor's elements (in f64): a shard's share of the squared global
/// gradient norm.
pub fn squared_norm(t: &Tensor) -> Result<f64> {
    Ok(t.sqr()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
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

    fn quadratic_run(shards: usize, steps: usize) -> (Vec<f32>, AdamW, Var) {
        let dev = Device::Cpu;
        let x = Var::new(&[[3.0f32, -2.0], [1.0, 0.5]], &dev).unwrap();
        let b = Var::new(&[0.7f32, -0.3, 0.2], &dev).unwrap();
        let vars = vec![("x".to_string(), x.clone()), ("b".to_string(), b.clone())];
        // One optimizer per shard, as ranks would hold them; every shard sees the full gradient.
        let mut opts: Vec<AdamW> = (0..shards)
            .map(|r| AdamW::new(vars.clone(), AdamWConfig::default(), shards, r).unwrap())
            .collect();
        for _ in 0..steps {
            let loss = (x.as_tensor().sqr().unwrap().sum_all().unwrap()
                + b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
            let store = loss.backward().unwrap();
            let grads = opts[0].gradients(&store);
            let flat = opts[0].layout().flatten(&grads, &dev).unwrap();
            let present = vec![true; grads.len()];
            let mut pieces = Vec::new();
            for opt in opts.iter_mut() {
                let r = opt.shard();
                let g = flat.narrow(0, r.start, r.len()).unwrap();
                pieces.push(opt.step_shard(&g, &present, 0.05, 1.0).unwrap());
            }
            opts[0]
                .set_parameters(&Tensor::cat(&pieces, 0).unwrap())
                .unwrap();
        }
        let params: Vec<Option<Tensor>> = opts[0]
            .vars()
            .iter()
            .map(|(_, v)| Some(v.as_tensor().clone()))
            .collect();
        let flat = opts[0]
            .layout()
            .flatten(&params, &dev)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (flat, opts.swap_remove(0), x)
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_state_round_trips() {
        let (flat, opt, x) = quadratic_run(1, 300);
        assert!(flat.iter().all(|a| a.abs() < 0.05), "{flat:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let (m, v) = opt.moments();
        opt.save_full(m, v, &path).unwrap();
        // The moments of x alone, for an optimizer of x alone (extra entries are ignored).
        let mut alone = AdamW::new(vec![("x".into(), x)], AdamWConfig::default(), 1, 0).unwrap();
        alone.load(&path).unwrap();
        assert_eq!(alone.moments().0.dims(), [4]);
        let mut same = AdamW::new(opt.vars().to_vec(), AdamWConfig::default(), 2, 1).unwrap();
        same.load(&path).unwrap();
        assert_eq!(same.step_count(), 300);
        // Shard 1 of 2 holds the second half of the 7 moments and one element of padding.
        assert_eq!(same.shard(), 4..8);
        let mut expected = m.narrow(0, 4, 3).unwrap().to_vec1::<f32>().unwrap();
        expected.push(0.0);
        assert_eq!(same.moments().0.to_vec1::<f32>().unwrap(), expected);
    }

    #[test]
    fn sharded_updates_equal_the_unsharded_update_bit_for_bit() {
        // 7 parameters over 2, 3 and 4 shards: padding included.
        for shards in [2, 3, 4] {
            assert_eq!(quadratic_run(1, 25).0, quadratic_run(shards, 25).0[..7]);
        }
        let (_, opt, _) = quadratic_run(4, 1);
        assert_eq!(opt.layout().padded(), 8);
        assert_eq!(opt.state_bytes(), 2 * 2 * 4);
    }
}
