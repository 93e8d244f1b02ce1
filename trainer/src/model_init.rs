//! Trainable models: a var map holding `EsmForMaskedLM` weights, seeded initialisation,
//! loading from and exporting to checkpoint directories.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use plm_model::{EsmConfig, EsmForMaskedLM};

/// The variables of `varmap` with their names, in name order.
pub fn vars_by_name(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("var map lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Re-initialises every variable of `varmap` from `seed`, in name order: matrices (rank ≥ 2)
/// get `weights(shape, rng)`, biases (`bias`/`beta`) zeros, other vectors (norm scales) ones.
pub fn seeded_init(
    varmap: &VarMap,
    seed: u64,
    mut weights: impl FnMut(&Shape, &mut StdRng) -> Vec<f32>,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    for (name, var) in vars_by_name(varmap)? {
        let shape = var.shape().clone();
        let device = var.device().clone();
        let value = if var.rank() >= 2 {
            Tensor::from_vec(weights(&shape, &mut rng), shape, &device)?
        } else if name.ends_with("bias") || name.ends_with("beta") {
            Tensor::zeros(shape, DType::F32, &device)?
        } else {
            Tensor::ones(shape, DType::F32, &device)?
        };
        var.set(&value.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// A model whose weights live in a [`VarMap`].
pub struct TrainableModel {
    /// The variables.
    pub varmap: VarMap,
    /// The network reading them.
    pub model: EsmForMaskedLM,
    /// Its configuration.
    pub config: EsmConfig,
}

impl TrainableModel {
    /// A fresh model initialised as BERT/ESM (normal(0, 0.02) weights, zero biases, unit norms)
    /// from `seed`.
    pub fn new(config: &EsmConfig, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = EsmForMaskedLM::load(vb, config)?;
        let normal = Normal::new(0.0f32, 0.02).context("normal distribution")?;
        seeded_init(&varmap, seed, |shape, rng| {
            (0..shape.elem_count())
                .map(|_| normal.sample(rng))
                .collect()
        })?;
        Ok(Self {
            varmap,
            model,
            config: config.clone(),
        })
    }

    /// A model initialised from a checkpoint directory's weights.
    pub fn from_checkpoint(dir: &Path, device: &Device) -> Result<Self> {
        let ckpt = plm_model::Checkpoint::open(dir)?;
        let mut this = Self::new(&ckpt.config, 0, device)?;
        this.load_weights(&dir.join(plm_model::checkpoint::files::WEIGHTS))?;
        Ok(this)
    }

    /// Overwrites the variables with the tensors of a safetensors file (names must match).
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("var map lock poisoned"))?;
        for (name, var) in data.iter() {
            let alt = name.replace(".weight", ".gamma").replace(".bias", ".beta");
            let t = tensors
                .get(name)
                .or_else(|| tensors.get(&alt))
                .with_context(|| format!("{}: no tensor {name}", path.display()))?;
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)
                .with_context(|| format!("{}: tensor {name}", path.display()))?;
        }
        Ok(())
    }

    /// Named variables, for the optimizer.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.varmap
            .data()
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The network for a forward pass in `dtype`: the f32 master weights themselves, or a cast
    /// of them (mixed precision: gradients flow back to the f32 variables through the cast).
    pub fn network(&self, dtype: DType) -> Result<EsmForMaskedLM> {
        if dtype == DType::F32 {
            return Ok(self.model.clone());
        }
        let mut device = Device::Cpu;
        let mut tensors = HashMap::new();
        for (name, var) in self.named_vars() {
            device = var.device().clone();
            tensors.insert(name, var.as_tensor().to_dtype(dtype)?);
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, &device);
        Ok(EsmForMaskedLM::load(vb, &self.config)?)
    }

    /// Weights as plain tensors for saving.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }
}
