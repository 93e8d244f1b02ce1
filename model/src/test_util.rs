//! Helpers shared by the unit tests.

use candle_core::Tensor;

/// Largest absolute element-wise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("comparable tensors")
}
