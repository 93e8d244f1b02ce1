//! Alignment details (start cell, columns) of a hit whose score and end cell are known.
//!
//! The path is recovered by aligning the reversed prefixes `q[..=query_end]` and
//! `t[..=target_end]` anchored at their first cell with block-aligner's SIMD X-drop aligner
//! (traceback on), which is fast but adaptive-banded. The result is accepted only when its score
//! equals the exact Smith–Waterman score; otherwise the scalar quadratic traceback runs.

use crate::align::{from_ops, local_alignment_scalar, path_score, Alignment, LocalScore};
use crate::matrix::GapCosts;

/// Alignment of `query` and `target` ending at `end` with score `end.score`.
pub(crate) fn traceback(query: &[u8], target: &[u8], end: LocalScore, gaps: GapCosts) -> Alignment {
    let qp = &query[..=end.query_end.min(query.len() - 1)];
    let tp = &target[..=end.target_end.min(target.len() - 1)];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            if let Some(a) = block::reverse_anchored(qp, tp, end.score, gaps) {
                if path_score(query, target, &a, gaps) == end.score {
                    return a;
                }
            }
        }
    }
    // The best local alignment of the prefixes has the same score and the same coordinates.
    local_alignment_scalar(qp, tp, gaps)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::alphabet::encode;
    use crate::simd::QueryProfile;

    #[test]
    fn block_aligner_path_is_used_and_optimal() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let q = encode("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ")
            .unwrap_or_default();
        let t = encode("GGMKTAYIAKQRQISFVKSHFSRQAEERLGLIEVQAPILSRVGDGTDNLSGAEKAVQVKVKALPDAQWW")
            .unwrap_or_default();
        let end = QueryProfile::new(&q).local_score(&t, GapCosts::BLAST);
        let qp = &q[..=end.query_end];
        let tp = &t[..=end.target_end];
        let a = block::reverse_anchored(qp, tp, end.score, GapCosts::BLAST);
        let a = a.unwrap_or_else(|| panic!("block-aligner did not reach score {}", end.score));
        assert_eq!(path_score(&q, &t, &a, GapCosts::BLAST), end.score);
        assert_eq!(a, local_alignment_scalar(&q, &t, GapCosts::BLAST));
    }
}

#[cfg(target_arch = "x86_64")]
mod block {
    use super::{from_ops, Alignment, GapCosts};
    use crate::align::Op;
    use crate::alphabet::{letter, LETTERS};
    use crate::matrix::BLOSUM62;
    use block_aligner::cigar::{Cigar, Operation};
    use block_aligner::scan_block::{Block, PaddedBytes};
    use block_aligner::scores::{AAMatrix, Gaps, Matrix};
    use std::cell::RefCell;
    use std::sync::OnceLock;

    const MIN_BLOCK: usize = 32;
    const MAX_BLOCK: usize = 256;

    fn matrix() -> &'static AAMatrix {
        static M: OnceLock<AAMatrix> = OnceLock::new();
        M.get_or_init(|| {
            let mut m = AAMatrix::new();
            for (a, &la) in LETTERS.iter().enumerate() {
                for (b, &lb) in LETTERS.iter().enumerate() {
                    m.set(la, lb, BLOSUM62[a][b]);
                }
            }
            m
        })
    }

    /// Best alignment of the reversed prefixes that starts at their first cell, turned back
    /// into forward coordinates; `None` when its score is not `score`.
    pub(super) fn reverse_anchored(
        qp: &[u8],
        tp: &[u8],
        score: i32,
        gaps: GapCosts,
    ) -> Option<Alignment> {
        let open = i8::try_from(-gaps.first()).ok()?;
        let extend = i8::try_from(-gaps.extend).ok()?;
        if extend >= 0 || open >= extend {
            return None;
        }
        let rq: Vec<u8> = qp.iter().rev().map(|&c| letter(c)).collect();
        let rt: Vec<u8> = tp.iter().rev().map(|&c| letter(c)).collect();
        let q = PaddedBytes::from_bytes::<AAMatrix>(&rq, MAX_BLOCK);
        let t = PaddedBytes::from_bytes::<AAMatrix>(&rt, MAX_BLOCK);
        // The aligner's buffers are sized by an upper bound of the lengths and reused.
        let cap = rq.len().max(rt.len()).max(1024).next_power_of_two();
        let mut slot = BLOCK
            .with(|b| b.borrow_mut().take())
            .filter(|(c, _)| *c >= cap);
        let (_, block) =
            slot.get_or_insert_with(|| (cap, Block::<true, true>::new(cap, cap, MAX_BLOCK)));
        // A gap of length n costs `open + extend * (n - 1)` in block-aligner.
        let g = Gaps { open, extend };
        block.align(&q, &t, matrix(), g, MIN_BLOCK..=MAX_BLOCK, score);
        let result = path_of(block, qp, tp, score);
        BLOCK.with(|b| *b.borrow_mut() = slot);
        result
    }

    thread_local! {
        static BLOCK: RefCell<Option<(usize, Block<true, true>)>> = const { RefCell::new(None) };
    }

    fn path_of(block: &Block<true, true>, qp: &[u8], tp: &[u8], score: i32) -> Option<Alignment> {
        let res = block.res();
        if res.score != score || res.query_idx == 0 || res.reference_idx == 0 {
            return None;
        }
        let mut cigar = Cigar::new(res.query_idx, res.reference_idx);
        block
            .trace()
            .cigar(res.query_idx, res.reference_idx, &mut cigar);
        let mut ops = Vec::with_capacity(res.query_idx + res.reference_idx);
        for op_len in cigar.to_vec() {
            let op = match op_len.op {
                Operation::M | Operation::Eq | Operation::X => Op::Pair,
                Operation::I => Op::QueryOnly,
                Operation::D => Op::TargetOnly,
                Operation::Sentinel => continue,
            };
            ops.extend(std::iter::repeat_n(op, op_len.len));
        }
        // The reversed path runs from the forward end back to the forward start.
        ops.reverse();
        let query_start = qp.len() - res.query_idx;
        let target_start = tp.len() - res.reference_idx;
        Some(from_ops(qp, tp, query_start, target_start, &ops, score))
    }
}
