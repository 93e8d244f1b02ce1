//! The row-major matrices the engine answers with.

/// A row-major matrix of f32.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of `cols` columns (a row count that does not divide evenly is truncated).
    pub fn with_cols(data: Vec<f32>, cols: usize) -> Self {
        Self {
            rows: data.len() / cols.max(1),
            cols,
            data,
        }
    }

    /// A square matrix (`n²` values).
    pub fn square(data: Vec<f32>) -> Self {
        let n = (data.len() as f64).sqrt().round() as usize;
        Self {
            rows: n,
            cols: n,
            data,
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}
