//! Layer norm loading that accepts both `weight`/`bias` and `gamma`/`beta` names, with a
//! forward pass that stays differentiable while training.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

/// A layer norm: candle's fused kernel at inference, and the composed (differentiable) form when
/// the input tracks gradients — candle's fused layer-norm op has no backward pass, so using it
/// while training would silently stop every gradient at the norm.
#[derive(Debug, Clone)]
pub struct Norm {
    inner: LayerNorm,
    eps: f32,
}

impl Norm {
    /// The wrapped candle layer norm.
    pub fn inner(&self) -> &LayerNorm {
        &self.inner
    }
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.track_op() {
            let beta = self
                .inner
                .bias()
                .cloned()
                .map_or_else(|| self.inner.weight().zeros_like(), Ok)?;
            candle_nn::ops::layer_norm_slow(xs, self.inner.weight(), &beta, self.eps)
        } else {
            self.inner.forward(xs)
        }
    }
}

/// Loads a layer norm of `size` from `vb`, using `gamma`/`beta` when the checkpoint stores them
/// under those names (`transformers` 5.x `save_pretrained`) and `weight`/`bias` otherwise.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    let inner = if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
        let weight = vb.get(size, "gamma")?;
        let bias = vb.get(size, "beta")?;
        LayerNorm::new(weight, bias, eps)
    } else {
        candle_nn::layer_norm(size, eps, vb)?
    };
    Ok(Norm {
        inner,
        eps: eps as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn gradients_flow_through_the_norm_and_match_the_fused_forward() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let norm = layer_norm(4, 1e-5, vb).unwrap();
        let x = Var::from_tensor(&Tensor::new(&[[1f32, 2.0, 4.0, 8.0]], &Device::Cpu).unwrap())
            .unwrap();
        let tracked = norm.forward(x.as_tensor()).unwrap();
        let fused = norm.forward(&x.as_tensor().detach()).unwrap();
        let diff = crate::test_util::max_abs_diff(&tracked, &fused);
        assert!(diff < 1e-5, "{diff}");
        let loss = (tracked * Tensor::new(&[[1f32, -2.0, 3.0, 0.5]], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "no gradient reaches the input"
        );
        assert!(
            grads.get(norm.inner().weight()).is_some(),
            "no gradient for the weight"
        );
    }
}
