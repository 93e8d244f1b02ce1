//! BERT/ESM masked-language-model corruption: 15 % of residues selected, of which 80 % become
//! `<mask>`, 10 % a random amino acid and 10 % stay unchanged.

use rand::rngs::StdRng;
use rand::Rng;

use plm_model::tokenizer::{ProteinTokenizer, STANDARD_AMINO_ACIDS};

/// A padded, masked batch ready for the model.
#[derive(Debug, Clone)]
pub struct MaskedBatch {
    /// Rows.
    pub batch: usize,
    /// Tokens per row (padded).
    pub tokens: usize,
    /// Corrupted input ids, `batch × tokens`.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens.
    pub attention_mask: Vec<u32>,
    /// Flat indices (row × tokens + col) of the selected positions.
    pub target_positions: Vec<u32>,
    /// Original ids at those positions.
    pub target_ids: Vec<u32>,
}

/// Encodes and masks sequences; at least one residue per sequence is selected.
pub fn mask_batch(
    sequences: &[String],
    tokenizer: &ProteinTokenizer,
    rate: f64,
    rng: &mut StdRng,
) -> MaskedBatch {
    let special = tokenizer.special();
    let aa_ids: Vec<u32> = STANDARD_AMINO_ACIDS
        .chars()
        .filter_map(|c| tokenizer.residue_id(c))
        .collect();
    let encoded: Vec<Vec<u32>> = sequences
        .iter()
        .map(|s| {
            tokenizer
                .encode_clean(s)
                .unwrap_or_else(|_| vec![special.cls, special.eos])
        })
        .collect();
    let tokens = encoded.iter().map(Vec::len).max().unwrap_or(2);
    let batch = encoded.len();
    let mut input_ids = vec![special.pad; batch * tokens];
    let mut attention_mask = vec![0u32; batch * tokens];
    let mut target_positions = Vec::new();
    let mut target_ids = Vec::new();
    for (r, ids) in encoded.iter().enumerate() {
        let base = r * tokens;
        input_ids[base..base + ids.len()].copy_from_slice(ids);
        attention_mask[base..base + ids.len()].fill(1);
        let residues = ids.len().saturating_sub(2);
        if residues == 0 {
            continue;
        }
        let mut selected: Vec<usize> = (1..=residues).filter(|_| rng.random_bool(rate)).collect();
        if selected.is_empty() {
            selected.push(rng.random_range(1..=residues));
        }
        for pos in selected {
            let flat = base + pos;
            target_positions.push(flat as u32);
            target_ids.push(ids[pos]);
            let roll: f64 = rng.random();
            input_ids[flat] = if roll < 0.8 {
                special.mask
            } else if roll < 0.9 {
                aa_ids[rng.random_range(0..aa_ids.len())]
            } else {
                ids[pos]
            };
        }
    }
    MaskedBatch {
        batch,
        tokens,
        input_ids,
        attention_mask,
        target_positions,
        target_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn masks_about_fifteen_percent_with_80_10_10() {
        let tok = ProteinTokenizer::esm();
        let seqs: Vec<String> = (0..200)
            .map(|_| "ACDEFGHIKLMNPQRSTVWY".repeat(10))
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        let b = mask_batch(&seqs, &tok, 0.15, &mut rng);
        let total = 200.0 * 200.0;
        let frac = b.target_positions.len() as f64 / total;
        assert!((frac - 0.15).abs() < 0.01, "{frac}");
        let masked = b
            .target_positions
            .iter()
            .filter(|&&p| b.input_ids[p as usize] == tok.special().mask)
            .count() as f64
            / b.target_positions.len() as f64;
        assert!((masked - 0.8).abs() < 0.02, "{masked}");
        // Never masks special tokens or padding.
        for &p in &b.target_positions {
            let col = p as usize % b.tokens;
            assert!((1..=200).contains(&col));
        }
    }
}
