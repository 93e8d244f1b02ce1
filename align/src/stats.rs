//! Karlin–Altschul statistics: bit scores and E-values of local alignment scores.

/// Karlin–Altschul parameters of a scoring system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KarlinAltschul {
    /// Scale of the score distribution (per raw score unit).
    pub lambda: f64,
    /// Search-space constant.
    pub k: f64,
}

impl KarlinAltschul {
    /// Gapped BLOSUM62 with gap open 11, extend 1 (BLAST's defaults): `lambda = 0.267`,
    /// `K = 0.041` (NCBI BLAST `blast_stat.c`, table for BLOSUM62).
    pub const BLOSUM62_11_1: KarlinAltschul = KarlinAltschul {
        lambda: 0.267,
        k: 0.041,
    };

    /// Bit score `(lambda * S - ln K) / ln 2`.
    pub fn bit_score(&self, raw: i32) -> f64 {
        (self.lambda * raw as f64 - self.k.ln()) / std::f64::consts::LN_2
    }

    /// E-value `K * m * n * exp(-lambda * S)` for a query of `query_len` residues against a
    /// reference of `reference_residues` residues in total. The effective search space is the
    /// plain product `m * n` (no edge-effect length correction), so E-values are slightly
    /// conservative for short sequences compared with BLAST.
    pub fn evalue(&self, raw: i32, query_len: usize, reference_residues: usize) -> f64 {
        self.k * query_len as f64 * reference_residues as f64 * (-self.lambda * raw as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_score_matches_blast_convention() {
        let ka = KarlinAltschul::BLOSUM62_11_1;
        // BLAST: a raw score of 100 is about 43.1 bits with these constants.
        assert!(
            (ka.bit_score(100) - 43.13).abs() < 0.05,
            "{}",
            ka.bit_score(100)
        );
        // E = m n 2^-bits.
        let e = ka.evalue(100, 300, 1_000_000);
        let from_bits = 300.0 * 1e6 * 2f64.powf(-ka.bit_score(100));
        assert!((e / from_bits - 1.0).abs() < 1e-9);
    }
}
