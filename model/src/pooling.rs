//! Pooling per-residue features into one vector per sequence.

use std::str::FromStr;

use crate::error::PlmError;

/// How to pool residues into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// Mean over residues (special tokens excluded).
    Mean,
    /// The `<cls>` token's hidden state.
    Cls,
    /// Element-wise maximum over residues.
    Max,
}

impl Pooling {
    /// Name used in SQL and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }
}

impl FromStr for Pooling {
    type Err = PlmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            other => Err(PlmError::InvalidArgument(format!(
                "unknown pooling '{other}' (valid: mean, cls, max)"
            ))),
        }
    }
}

/// Mean of the rows of a row-major `(rows × dim)` matrix.
pub fn mean_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let rows = data.len() / dim.max(1);
    let mut out = vec![0f32; dim];
    for r in 0..rows {
        for (o, v) in out.iter_mut().zip(&data[r * dim..(r + 1) * dim]) {
            *o += v;
        }
    }
    let inv = 1.0 / rows.max(1) as f32;
    out.iter_mut().for_each(|v| *v *= inv);
    out
}

/// Element-wise maximum of the rows of a row-major `(rows × dim)` matrix.
pub fn max_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let rows = data.len() / dim.max(1);
    let mut out = vec![f32::NEG_INFINITY; dim];
    for r in 0..rows {
        for (o, v) in out.iter_mut().zip(&data[r * dim..(r + 1) * dim]) {
            *o = o.max(*v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_by_hand() {
        let m = [1.0, 2.0, 3.0, -4.0, 5.0, 0.0];
        assert_eq!(mean_rows(&m, 2), vec![3.0, -2.0 / 3.0]);
        assert_eq!(max_rows(&m, 2), vec![5.0, 2.0]);
    }

    #[test]
    fn parses_names() {
        assert_eq!("MEAN".parse::<Pooling>().unwrap(), Pooling::Mean);
        assert_eq!(" cls ".parse::<Pooling>().unwrap(), Pooling::Cls);
        let err = "sum".parse::<Pooling>().unwrap_err().to_string();
        assert!(err.contains("mean, cls, max"), "{err}");
    }
}
