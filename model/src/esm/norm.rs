//! Layer norm loading that accepts both `weight`/`bias` and `gamma`/`beta` names.

use candle_core::Result;
use candle_nn::{LayerNorm, VarBuilder};

/// Loads a layer norm of `size` from `vb`, using `gamma`/`beta` when the checkpoint stores them
/// under those names (`transformers` 5.x `save_pretrained`) and `weight`/`bias` otherwise.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    if vb.contains_tensor("gamma") && !vb.contains_tensor("weight") {
        let weight = vb.get(size, "gamma")?;
        let bias = vb.get(size, "beta")?;
        return Ok(LayerNorm::new(weight, bias, eps));
    }
    candle_nn::layer_norm(size, eps, vb)
}
