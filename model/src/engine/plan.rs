//! Pure planning of a call: the pieces a set of sequences is cut into (whole sequences or
//! windows of long ones) and how the outputs of pieces merge back into one per sequence.
//! Batching of pieces under the token budget is [`crate::batching`]'s.

use super::execute::{Request, SequenceOutput};
use super::options::{EngineOptions, LongSequencePolicy};
use crate::error::{PlmError, Result};
use crate::pooling::mean_rows;
use crate::window::{merge_windows, plan_windows};

/// One piece of work: a whole sequence or one window of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    /// Index of the sequence it belongs to.
    pub owner: usize,
    /// Offset of its first residue in that sequence.
    pub start: usize,
    /// Its residues.
    pub residues: String,
}

/// Cuts cleaned sequences into pieces of at most `limit` residues under `options`: a sequence
/// that fits is one piece; a longer one is refused under [`LongSequencePolicy::Error`] (and
/// when logits are asked for, which windows cannot give), else cut into overlapping windows.
/// A sequence over `options.max_length` is refused under either policy.
pub(super) fn plan_pieces(
    cleaned: &[String],
    limit: usize,
    options: &EngineOptions,
    request: &Request,
) -> Result<Vec<Piece>> {
    let overlap = options.window_overlap.min(limit / 2);
    let mut pieces = Vec::with_capacity(cleaned.len());
    for (owner, seq) in cleaned.iter().enumerate() {
        if let Some(cap) = options.max_length.filter(|&cap| seq.len() > cap) {
            return Err(PlmError::SequenceOverLimit {
                length: seq.len(),
                limit: cap,
            });
        }
        if seq.len() <= limit {
            pieces.push(Piece {
                owner,
                start: 0,
                residues: seq.clone(),
            });
            continue;
        }
        if options.long_sequences == LongSequencePolicy::Error || request.logits {
            return Err(PlmError::SequenceTooLong {
                length: seq.len(),
                limit,
            });
        }
        for start in plan_windows(seq.len(), limit, overlap) {
            pieces.push(Piece {
                owner,
                start,
                residues: seq[start..start + limit].to_string(),
            });
        }
    }
    Ok(pieces)
}

/// Combines the outputs of `pieces` (in the same order) into one output per sequence of
/// `lengths` residues: windows' per-residue states and contacts are averaged where they
/// overlap, their `<cls>` vectors averaged. `h` is the width of a hidden state.
pub(super) fn merge_pieces(
    lengths: &[usize],
    pieces: &[Piece],
    outputs: Vec<SequenceOutput>,
    request: &Request,
    h: usize,
) -> Vec<SequenceOutput> {
    let mut by_owner: Vec<Vec<(usize, SequenceOutput)>> =
        (0..lengths.len()).map(|_| Vec::new()).collect();
    for (piece, output) in pieces.iter().zip(outputs) {
        by_owner[piece.owner].push((piece.start, output));
    }
    by_owner
        .into_iter()
        .zip(lengths)
        .map(|(mut parts, &len)| {
            if parts.len() == 1 {
                return parts.pop().map(|(_, o)| o).unwrap_or_default();
            }
            let mut out = SequenceOutput::default();
            for l in 0..request.layers.len() {
                let blocks: Vec<(usize, &[f32])> = parts
                    .iter()
                    .map(|(s, o)| (*s, o.residues[l].as_slice()))
                    .collect();
                out.residues.push(merge_windows(len, h, &blocks));
                let cls: Vec<f32> = parts
                    .iter()
                    .flat_map(|(_, o)| o.cls[l].iter().copied())
                    .collect();
                out.cls.push(mean_rows(&cls, h));
            }
            if request.contacts {
                out.contacts = Some(merge_contact_windows(len, &parts));
            }
            out
        })
        .collect()
}

/// Averages contact maps of overlapping windows; pairs never in one window get 0.
fn merge_contact_windows(len: usize, parts: &[(usize, SequenceOutput)]) -> Vec<f32> {
    let mut sum = vec![0f32; len * len];
    let mut count = vec![0u16; len * len];
    for (start, o) in parts {
        let Some(c) = &o.contacts else { continue };
        let w = (c.len() as f64).sqrt().round() as usize;
        for i in 0..w {
            for j in 0..w {
                let (gi, gj) = (start + i, start + j);
                if gi < len && gj < len {
                    sum[gi * len + gj] += c[i * w + j];
                    count[gi * len + gj] += 1;
                }
            }
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(s, c)| if *c > 0 { s / *c as f32 } else { 0.0 })
        .collect()
}

/// Places per-layer `(rows × h)` matrices side by side into `(rows × h·layers)`.
pub(super) fn interleave_layers(per_layer: &[Vec<f32>], h: usize) -> Vec<f32> {
    if per_layer.len() == 1 {
        return per_layer[0].clone();
    }
    let rows = per_layer.first().map_or(0, |m| m.len() / h);
    let mut out = Vec::with_capacity(rows * h * per_layer.len());
    for r in 0..rows {
        for m in per_layer {
            out.extend_from_slice(&m[r * h..(r + 1) * h]);
        }
    }
    out
}

/// Consecutive runs of `sequences` of about `budget` residues each (a longer sequence is a
/// run of its own).
pub(super) fn residue_chunks(sequences: &[String], budget: usize) -> Vec<&[String]> {
    let mut chunks = Vec::new();
    let (mut start, mut residues) = (0, 0);
    for (i, s) in sequences.iter().enumerate() {
        if i > start && residues + s.len() > budget {
            chunks.push(&sequences[start..i]);
            (start, residues) = (i, 0);
        }
        residues += s.len();
    }
    if start < sequences.len() {
        chunks.push(&sequences[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(layers: usize, contacts: bool) -> Request {
        Request {
            layers: (0..layers).collect(),
            contacts,
            logits: false,
        }
    }

    fn window_options(overlap: usize) -> EngineOptions {
        EngineOptions {
            long_sequences: LongSequencePolicy::Window,
            window_overlap: overlap,
            ..EngineOptions::default()
        }
    }

    #[test]
    fn short_sequences_are_one_piece_each_and_long_ones_windows() {
        let seqs = vec!["ACDE".to_string(), "A".repeat(25), "MK".to_string()];
        let pieces = plan_pieces(&seqs, 10, &window_options(4), &request(1, false)).unwrap();
        let owners: Vec<usize> = pieces.iter().map(|p| p.owner).collect();
        assert_eq!(owners, [0, 1, 1, 1, 1, 2]);
        let windows: Vec<&Piece> = pieces.iter().filter(|p| p.owner == 1).collect();
        assert!(windows.iter().all(|p| p.residues.len() == 10));
        assert_eq!(
            windows.last().unwrap().start,
            15,
            "the last window ends at the end"
        );
        for pair in windows.windows(2) {
            assert!(
                pair[0].start + 10 >= pair[1].start + 4,
                "neighbours overlap"
            );
        }
    }

    #[test]
    fn long_sequences_are_refused_by_policy_length_cap_and_logits() {
        let seqs = vec!["A".repeat(25)];
        let refuse = EngineOptions::default();
        assert!(matches!(
            plan_pieces(&seqs, 10, &refuse, &request(1, false)),
            Err(PlmError::SequenceTooLong {
                length: 25,
                limit: 10
            })
        ));
        let capped = EngineOptions {
            max_length: Some(20),
            ..window_options(4)
        };
        assert!(matches!(
            plan_pieces(&seqs, 10, &capped, &request(1, false)),
            Err(PlmError::SequenceOverLimit {
                length: 25,
                limit: 20
            })
        ));
        let logits = Request {
            logits: true,
            ..request(0, false)
        };
        assert!(plan_pieces(&seqs, 10, &window_options(4), &logits).is_err());
    }

    #[test]
    fn merged_windows_average_overlaps_and_keep_single_pieces() {
        let h = 2;
        let seqs = vec!["AAAAAA".to_string(), "MK".to_string()];
        let pieces = plan_pieces(&seqs, 4, &window_options(2), &request(1, true)).unwrap();
        assert_eq!(pieces.len(), 3);
        // Window outputs: every value of a window's rows is its start offset + 1.
        let outputs: Vec<SequenceOutput> = pieces
            .iter()
            .map(|p| {
                let n = p.residues.len();
                let v = (p.start + 1) as f32;
                SequenceOutput {
                    residues: vec![vec![v; n * h]],
                    cls: vec![vec![v; h]],
                    contacts: Some(vec![v; n * n]),
                    logits: None,
                }
            })
            .collect();
        let merged = merge_pieces(&[6, 2], &pieces, outputs, &request(1, true), h);
        assert_eq!(merged.len(), 2);
        // Windows start at 0 and 2: residues 0-1 from the first, 2-3 shared, 4-5 the second.
        let rows: Vec<f32> = merged[0].residues[0].chunks(h).map(|r| r[0]).collect();
        assert_eq!(rows, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(merged[0].cls[0], [2.0, 2.0]);
        let contacts = merged[0].contacts.as_ref().unwrap();
        assert_eq!(contacts[0], 1.0); // (0, 0): first window only
        assert_eq!(contacts[2 * 6 + 3], 2.0); // (2, 3): both windows
        assert_eq!(contacts[5], 0.0); // (0, 5): in no window together
        assert_eq!(merged[1].residues[0], vec![1.0; 2 * h]);
    }

    #[test]
    fn layers_interleave_row_by_row() {
        let a = vec![1.0, 2.0, 3.0, 4.0];
        let b = vec![5.0, 6.0, 7.0, 8.0];
        assert_eq!(
            interleave_layers(&[a.clone(), b], 2),
            [1.0, 2.0, 5.0, 6.0, 3.0, 4.0, 7.0, 8.0]
        );
        assert_eq!(interleave_layers(std::slice::from_ref(&a), 2), a);
    }

    #[test]
    fn residue_chunks_respect_the_budget_and_keep_order() {
        let seqs: Vec<String> = [5, 5, 5, 20, 1].iter().map(|&n| "A".repeat(n)).collect();
        let chunks = residue_chunks(&seqs, 10);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 1, 1, 1]);
        assert_eq!(chunks.concat(), seqs);
    }
}
