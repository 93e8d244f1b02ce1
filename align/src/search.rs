//! The labelled reference set and its search API.

use std::cell::RefCell;

use crate::align::Alignment;
use crate::alphabet::{encode, letter};
use crate::index::{KmerIndex, K_RANGE};
use crate::matrix::GapCosts;
use crate::prefilter::{candidates, PrefilterParams, Scratch};
use crate::simd::QueryProfile;
use crate::stats::KarlinAltschul;
use crate::traceback::traceback;
use crate::AlignError;

/// How a reference is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Word length of the k-mer index (2 to 5).
    pub k: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams { k: 3 }
    }
}

/// Search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// At most this many hits are returned.
    pub max_hits: usize,
    /// Hits with a larger E-value are dropped.
    pub max_evalue: f64,
    /// Fill [`Hit::pairs`] with the aligned (query, target) positions.
    pub with_pairs: bool,
    /// Candidate selection.
    pub prefilter: PrefilterParams,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            max_hits: 50,
            max_evalue: 1e-3,
            with_pairs: false,
            prefilter: PrefilterParams::default(),
        }
    }
}

/// One reference sequence similar to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Index of the target in the reference (build order).
    pub target_index: usize,
    /// Identifier of the target.
    pub target_id: String,
    /// Smith–Waterman score (BLOSUM62, gaps 11/1).
    pub raw_score: i32,
    /// Bit score (see [`KarlinAltschul::bit_score`]).
    pub bit_score: f64,
    /// E-value against the whole reference (see [`KarlinAltschul::evalue`]).
    pub evalue: f64,
    /// Identical positions / alignment columns (gaps included).
    pub identity: f64,
    /// Alignment columns, gaps included.
    pub alignment_length: usize,
    /// Fraction of the query inside the alignment (`(query_end - query_start) / query length`).
    pub query_coverage: f64,
    /// Fraction of the target inside the alignment.
    pub target_coverage: f64,
    /// First aligned query position (0-based).
    pub query_start: usize,
    /// One past the last aligned query position.
    pub query_end: usize,
    /// First aligned target position (0-based).
    pub target_start: usize,
    /// One past the last aligned target position.
    pub target_end: usize,
    /// Aligned `(query position, target position)` pairs when [`SearchParams::with_pairs`] is
    /// set (gap columns omitted), otherwise empty.
    pub pairs: Vec<(u32, u32)>,
}

/// A labelled set of protein sequences with its k-mer index. Immutable after building, so it
/// can be shared between threads; each thread keeps its own search buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub(crate) ids: Vec<String>,
    /// Encoded residues of all sequences, concatenated.
    pub(crate) residues: Vec<u8>,
    /// First global position of each sequence, then the total length.
    pub(crate) starts: Vec<u32>,
    pub(crate) index: KmerIndex,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Gap costs used everywhere (BLAST's 11/1).
pub const GAPS: GapCosts = GapCosts::BLAST;
/// Statistics matching [`GAPS`] and BLOSUM62.
pub const STATS: KarlinAltschul = KarlinAltschul::BLOSUM62_11_1;

impl Reference {
    /// Encodes and indexes `(id, sequence)` entries with the default [`IndexParams`].
    pub fn build<I, S, T>(entries: I) -> Result<Reference, AlignError>
    where
        I: IntoIterator<Item = (S, T)>,
        S: Into<String>,
        T: AsRef<str>,
    {
        Self::build_with(entries, IndexParams::default())
    }

    /// Encodes and indexes `(id, sequence)` entries.
    pub fn build_with<I, S, T>(entries: I, params: IndexParams) -> Result<Reference, AlignError>
    where
        I: IntoIterator<Item = (S, T)>,
        S: Into<String>,
        T: AsRef<str>,
    {
        let k = params.k.clamp(*K_RANGE.start(), *K_RANGE.end());
        let mut ids = Vec::new();
        let mut residues = Vec::new();
        let mut starts = vec![0u32];
        for (id, seq) in entries {
            let id = id.into();
            match encode(seq.as_ref()) {
                Ok(codes) => residues.extend_from_slice(&codes),
                Err(e) => {
                    return Err(AlignError::InvalidEntry {
                        id,
                        source: Box::new(e),
                    })
                }
            }
            if residues.len() > (u32::MAX / 2) as usize {
                return Err(AlignError::ReferenceTooLarge(residues.len()));
            }
            starts.push(residues.len() as u32);
            ids.push(id);
        }
        let index = KmerIndex::build(&residues, &starts, k);
        Ok(Reference {
            ids,
            residues,
            starts,
            index,
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the reference holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Total number of residues (the `n` of the E-value's search space).
    pub fn total_residues(&self) -> usize {
        self.residues.len()
    }

    /// Identifier of sequence `index`.
    pub fn id(&self, index: usize) -> Option<&str> {
        self.ids.get(index).map(String::as_str)
    }

    /// Length of sequence `index` (0 when there is none).
    pub fn sequence_len(&self, index: usize) -> usize {
        self.codes(index).map_or(0, <[u8]>::len)
    }

    /// Sequence `index` (upper case, rare letters folded as in [`crate::alphabet`]).
    pub fn sequence(&self, index: usize) -> Option<String> {
        self.codes(index)
            .map(|c| c.iter().map(|&x| letter(x) as char).collect())
    }

    /// Word length of the index.
    pub fn k(&self) -> usize {
        self.index.k
    }

    pub(crate) fn codes(&self, index: usize) -> Option<&[u8]> {
        let s = *self.starts.get(index)? as usize;
        let e = *self.starts.get(index + 1)? as usize;
        self.residues.get(s..e)
    }

    /// Hits of `query`, best bit score first (ties: lower target index first).
    pub fn search(&self, query: &str, params: &SearchParams) -> Result<Vec<Hit>, AlignError> {
        let q = encode(query)?;
        let cands = SCRATCH.with(|s| {
            let mut scratch = s.borrow_mut();
            candidates(
                &self.index,
                &self.residues,
                &self.starts,
                &q,
                &params.prefilter,
                &mut scratch,
            )
        });
        let profile = QueryProfile::new(&q);
        let mut scored: Vec<(usize, crate::LocalScore)> = Vec::new();
        let mut misses = 0;
        for (t, _) in cands {
            let Some(target) = self.codes(t as usize) else {
                continue;
            };
            let s = profile.local_score(target, GAPS);
            let e = STATS.evalue(s.score, q.len(), self.total_residues());
            if s.score > 0 && e <= params.max_evalue {
                scored.push((t as usize, s));
                misses = 0;
            } else {
                misses += 1;
                if misses >= params.prefilter.stop_after_misses {
                    break;
                }
            }
        }
        scored.sort_unstable_by(|a, b| b.1.score.cmp(&a.1.score).then(a.0.cmp(&b.0)));
        scored.truncate(params.max_hits);
        Ok(scored
            .into_iter()
            .filter_map(|(t, s)| {
                let target = self.codes(t)?;
                let a = traceback(&q, target, s, GAPS);
                Some(self.hit(t, q.len(), target.len(), a, params.with_pairs))
            })
            .collect())
    }

    /// Aligns `query` with reference sequence `target_index` directly (no prefilter, no
    /// E-value cut-off); `None` for an unknown index or a score of zero.
    pub fn align_to(
        &self,
        query: &str,
        target_index: usize,
        with_pairs: bool,
    ) -> Result<Option<Hit>, AlignError> {
        let q = encode(query)?;
        let Some(target) = self.codes(target_index) else {
            return Ok(None);
        };
        let s = QueryProfile::new(&q).local_score(target, GAPS);
        if s.score <= 0 {
            return Ok(None);
        }
        let a = traceback(&q, target, s, GAPS);
        Ok(Some(self.hit(
            target_index,
            q.len(),
            target.len(),
            a,
            with_pairs,
        )))
    }

    fn hit(&self, t: usize, qlen: usize, tlen: usize, a: Alignment, with_pairs: bool) -> Hit {
        Hit {
            target_index: t,
            target_id: self.ids.get(t).cloned().unwrap_or_default(),
            raw_score: a.score,
            bit_score: STATS.bit_score(a.score),
            evalue: STATS.evalue(a.score, qlen, self.total_residues()),
            identity: a.identities as f64 / a.columns.max(1) as f64,
            alignment_length: a.columns,
            query_coverage: (a.query_end - a.query_start) as f64 / qlen.max(1) as f64,
            target_coverage: (a.target_end - a.target_start) as f64 / tlen.max(1) as f64,
            query_start: a.query_start,
            query_end: a.query_end,
            target_start: a.target_start,
            target_end: a.target_end,
            pairs: if with_pairs { a.pairs } else { Vec::new() },
        }
    }
}

/// Local alignment of two sequences (BLOSUM62, gaps 11/1) with its columns.
pub fn align_pair(query: &str, target: &str) -> Result<Alignment, AlignError> {
    let q = encode(query)?;
    let t = encode(target)?;
    let s = QueryProfile::new(&q).local_score(&t, GAPS);
    if s.score <= 0 {
        return Ok(crate::align::local_alignment_scalar(&q, &t, GAPS));
    }
    Ok(traceback(&q, &t, s, GAPS))
}
