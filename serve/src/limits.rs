//! The memory a request needs, estimated from its shape before anything is allocated, and the
//! refusals that keep one request from exhausting the server: over the request limit
//! (`54000`, with what to change), or an answer larger than PostgreSQL's 1 GB per value.
//!
//! The estimate is deliberately generous (every term rounds up): it counts the request itself,
//! the working memory of the largest engine batch (hidden states, Q/K/V, the feed-forward
//! activation, attention scores where the tensor path keeps them), the per-residue states held
//! at once, and the answer with its copies (the engine's result, the encoded frame).

use plm_model::{Engine, LongSequencePolicy, PlmError, Result, POOLING_CHUNK_RESIDUES};

use crate::protocol::{RequestSettings, Task, WINDOW_OVERLAP};

/// Largest value PostgreSQL stores in one datum (`MaxAllocSize`, 1 GB − 1), less a margin
/// for array headers.
pub const MAX_VALUE_BYTES: u64 = (1 << 30) - 1 - 4096;

/// Bytes per parsed structure byte (atoms, residues and chains of the parsed model).
const STRUCTURE_BYTES_PER_TEXT_BYTE: u64 = 24;

const F32: u64 = 4;
const MB: u64 = 1 << 20;

/// The dimensions of a model that decide memory.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Width of the residual stream.
    pub hidden: u64,
    /// Transformer blocks.
    pub layers: u64,
    /// Attention heads.
    pub heads: u64,
    /// Feed-forward width.
    pub intermediate: u64,
    /// Residues of one pass (the window length).
    pub window: u64,
    /// Token budget of one engine batch.
    pub batch_tokens: u64,
}

impl Shape {
    /// The shape of `engine`'s model with a batch budget of `batch_tokens`.
    pub fn of(engine: &Engine, batch_tokens: usize) -> Self {
        let c = engine.config();
        Self {
            hidden: c.hidden_size as u64,
            layers: c.num_hidden_layers as u64,
            heads: c.num_attention_heads as u64,
            intermediate: c.intermediate_size as u64,
            window: c.max_residues() as u64,
            batch_tokens: batch_tokens as u64,
        }
    }

    /// Residues one sequence of `length` occupies in passes (windows overlap).
    fn passed(&self, length: u64, settings: &RequestSettings) -> u64 {
        if length <= self.window || settings.long_sequences == LongSequencePolicy::Error {
            return length;
        }
        let step = self.window.saturating_sub(WINDOW_OVERLAP as u64).max(1);
        let windows = (length - self.window).div_ceil(step) + 1;
        windows * self.window
    }

    /// Working memory of the largest engine batch of a request of `total` residues whose
    /// longest piece is `longest`, keeping `kept` layers' hidden states; `maps` when attention
    /// maps are kept (contacts).
    fn batch(&self, longest: u64, total: u64, kept: u64, maps: bool) -> u64 {
        let longest = longest.min(self.window) + 2;
        let tokens = self.batch_tokens.min(2 * total + 2).max(longest);
        let activations = tokens * (8 * self.hidden + 2 * self.intermediate) * F32;
        let kept = tokens * self.hidden * kept * F32;
        let scores = if maps {
            // Every block's maps are kept for the contact head, plus a block's softmax copy.
            (self.layers + 2) * self.heads * longest * longest * F32
        } else {
            2 * self.heads * longest * longest * F32
        };
        activations + kept + scores
    }
}

/// What a request will need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Peak bytes of the whole request.
    pub peak: u64,
    /// Bytes of the largest single value in the answer (one SQL datum).
    pub largest_value: u64,
}

/// Estimates `task` on a model of `shape`.
pub fn estimate(task: &Task, shape: &Shape, settings: &RequestSettings) -> Estimate {
    let len = |s: &String| s.len() as u64;
    let longest = |seqs: &mut dyn Iterator<Item = u64>| seqs.max().unwrap_or(0);
    let h = shape.hidden;
    match task {
        Task::Embed { sequences, .. } => {
            let input: u64 = sequences.iter().map(len).sum();
            let longest_seq = longest(&mut sequences.iter().map(len));
            // One pooling chunk of per-residue states at a time.
            let chunk = shape
                .passed(longest_seq, settings)
                .max(POOLING_CHUNK_RESIDUES as u64)
                .min(
                    sequences
                        .iter()
                        .map(|s| shape.passed(len(s), settings))
                        .sum(),
                );
            let answer = sequences.len() as u64 * h * F32;
            Estimate {
                peak: 2 * input
                    + shape.batch(longest_seq, input, 1, false)
                    + 2 * chunk * h * F32
                    + 3 * answer,
                largest_value: h * F32,
            }
        }
        Task::EmbedResidues { sequences, layers } => {
            let k = layers.len().max(1) as u64;
            let input: u64 = sequences.iter().map(len).sum();
            let passed: u64 = sequences
                .iter()
                .map(|s| shape.passed(len(s), settings))
                .sum();
            let longest_seq = longest(&mut sequences.iter().map(len));
            let answer = input * h * k * F32;
            Estimate {
                // States of every pass, the merged and interleaved answer, the encoded frame.
                peak: 2 * input
                    + shape.batch(longest_seq, input, k, false)
                    + passed * h * k * F32
                    + 3 * answer,
                largest_value: longest_seq * h * k * F32,
            }
        }
        Task::Contacts { sequence } => {
            let l = len(sequence);
            Estimate {
                peak: shape.batch(l, l, 0, true) + 4 * l * l * F32,
                largest_value: 3 * F32,
            }
        }
        Task::Function { sequence, .. } => {
            let l = len(sequence);
            Estimate {
                peak: shape.batch(l, l, 2, false) + 4 * shape.passed(l, settings) * h * 2 * F32,
                largest_value: 0,
            }
        }
        Task::Ppi { pairs, .. } => {
            let residues: u64 = pairs.iter().map(|(a, b)| len(a) + len(b)).sum();
            let longest_seq = longest(&mut pairs.iter().map(|(a, b)| len(a).max(len(b))));
            Estimate {
                peak: shape.batch(longest_seq, residues, 2, false) + 4 * residues * h * 2 * F32,
                largest_value: F32,
            }
        }
        Task::BindingSites {
            sequence,
            structure,
            ..
        } => {
            let l = len(sequence);
            let structure = structure.as_ref().map_or(0, len);
            Estimate {
                peak: shape.batch(l, l, 2, true)
                    + 4 * l * l * F32
                    + 4 * shape.passed(l, settings) * h * 2 * F32
                    + structure * STRUCTURE_BYTES_PER_TEXT_BYTE,
                largest_value: 0,
            }
        }
    }
}

fn describe(task: &Task) -> String {
    match task {
        Task::Embed { sequences, .. } => format!("embedding {} sequence(s)", sequences.len()),
        Task::EmbedResidues { sequences, layers } => format!(
            "per-residue features of {} sequence(s) over {} layer(s)",
            sequences.len(),
            layers.len().max(1)
        ),
        Task::Contacts { sequence } => format!("contacts of {} residues", sequence.len()),
        Task::Function { sequence, .. } => {
            format!("function prediction for {} residues", sequence.len())
        }
        Task::Ppi { pairs, .. } => format!("interaction scores of {} pair(s)", pairs.len()),
        Task::BindingSites {
            sequence,
            structure,
            ..
        } => match structure {
            Some(s) => format!(
                "binding sites of {} residues with a {} KB structure",
                sequence.len(),
                s.len() / 1024
            ),
            None => format!("binding sites of {} residues", sequence.len()),
        },
    }
}

fn hint(task: &Task) -> &'static str {
    match task {
        Task::Embed { .. } => "send fewer or shorter sequences per call",
        Task::EmbedResidues { .. } => {
            "ask for fewer layers, or fewer or shorter sequences per call"
        }
        Task::Contacts { .. } | Task::BindingSites { .. } => {
            "use a shorter sequence (or a smaller structure)"
        }
        Task::Function { .. } | Task::Ppi { .. } => "use shorter sequences",
    }
}

/// Refuses `task` when its estimate exceeds `limit_bytes`, or when one value of its answer
/// would be larger than PostgreSQL allows.
pub fn check(
    task: &Task,
    shape: &Shape,
    settings: &RequestSettings,
    limit_bytes: usize,
) -> Result<()> {
    let e = estimate(task, shape, settings);
    if e.peak > limit_bytes as u64 {
        return Err(PlmError::OverMemoryLimit {
            what: describe(task),
            needed_mb: e.peak.div_ceil(MB),
            limit_mb: limit_bytes as u64 / MB,
            hint: hint(task).into(),
        });
    }
    if e.largest_value > MAX_VALUE_BYTES {
        return Err(PlmError::AnswerTooLarge {
            size_mb: e.largest_value.div_ceil(MB),
            limit_mb: (MAX_VALUE_BYTES + 4096 + 1) / MB,
            hint: hint(task).into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esm8m() -> Shape {
        Shape {
            hidden: 320,
            layers: 6,
            heads: 20,
            intermediate: 1280,
            window: 1022,
            batch_tokens: 8192,
        }
    }

    fn settings(policy: LongSequencePolicy) -> RequestSettings {
        RequestSettings {
            long_sequences: policy,
            max_length: 100_000,
        }
    }

    fn residues(n: usize, len: usize, layers: usize) -> Task {
        Task::EmbedResidues {
            sequences: vec!["A".repeat(len); n],
            layers: vec![Some(-1); layers],
        }
    }

    #[test]
    fn the_reported_oom_is_refused_with_a_reason() {
        // plm_embed_residues(<1,020 residues>, layers => array_fill(-1, ARRAY[5000])).
        let task = residues(1, 1020, 5000);
        let err = check(
            &task,
            &esm8m(),
            &settings(LongSequencePolicy::Error),
            4 << 30,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("5000 layer(s)") && err.contains("plm.max_request_mb"),
            "{err}"
        );
        // The answer alone (1,020 × 320 × 5,000 floats) is over PostgreSQL's value limit too.
        let err = check(
            &task,
            &esm8m(),
            &settings(LongSequencePolicy::Error),
            usize::MAX,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("larger than the 1024 MB PostgreSQL allows"),
            "{err}"
        );
    }

    #[test]
    fn ordinary_requests_fit_a_modest_limit() {
        let s = settings(LongSequencePolicy::Error);
        let limit = 1 << 30;
        assert!(check(&residues(1, 1022, 2), &esm8m(), &s, limit).is_ok());
        let embed = Task::Embed {
            sequences: vec!["A".repeat(400); 10_000],
            layer: None,
            pooling: plm_model::Pooling::Mean,
        };
        assert!(check(&embed, &esm8m(), &s, limit).is_ok());
        let contacts = Task::Contacts {
            sequence: "A".repeat(1022),
        };
        assert!(check(&contacts, &esm8m(), &s, limit).is_ok());
    }

    #[test]
    fn estimates_grow_with_the_request() {
        let s = settings(LongSequencePolicy::Window);
        let shape = esm8m();
        let mut last = 0;
        for len in [10, 500, 1022, 5_000, 50_000] {
            let e = estimate(&residues(1, len, 1), &shape, &s).peak;
            assert!(e > last, "{len}: {e} <= {last}");
            last = e;
        }
        let one = estimate(&residues(1, 300, 1), &shape, &s).peak;
        let many = estimate(&residues(1, 300, 33), &shape, &s).peak;
        // 32 more layers of 300 × 320 floats, each held at least twice.
        assert!(many >= one + 2 * 32 * 300 * 320 * 4, "{many} vs {one}");
    }

    #[test]
    fn windows_cost_their_overlap() {
        let shape = esm8m();
        assert_eq!(
            shape.passed(1000, &settings(LongSequencePolicy::Window)),
            1000
        );
        // 3,000 residues in windows of 1,022 with 256 overlap: starts 0, 766, 1532, 1978.
        assert_eq!(
            shape.passed(3000, &settings(LongSequencePolicy::Window)),
            4 * 1022
        );
    }
}
