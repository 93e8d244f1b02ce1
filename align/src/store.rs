//! Compact binary form of a [`Reference`] (postcard, postings delta-encoded as varints).

use serde::{Deserialize, Serialize};

use crate::alphabet::ALPHABET_SIZE;
use crate::index::{word, word_count, KmerIndex, K_RANGE};
use crate::search::Reference;
use crate::AlignError;

const MAGIC: &str = "plm-align-reference";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    magic: String,
    version: u32,
    k: u32,
    ids: Vec<String>,
    lengths: Vec<u32>,
    residues: Vec<u8>,
    /// Postings count per word.
    counts: Vec<u32>,
    /// Postings, each list as the first position then gaps to the previous one.
    deltas: Vec<u32>,
}

impl Reference {
    /// Serialises the reference and its index.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AlignError> {
        let offsets = &self.index.offsets;
        let mut deltas = Vec::with_capacity(self.index.positions.len());
        for w in offsets.windows(2) {
            let mut prev = 0;
            for &p in &self.index.positions[w[0] as usize..w[1] as usize] {
                deltas.push(p - prev);
                prev = p;
            }
        }
        let stored = Stored {
            magic: MAGIC.to_string(),
            version: VERSION,
            k: self.index.k as u32,
            ids: self.ids.clone(),
            lengths: self.starts.windows(2).map(|w| w[1] - w[0]).collect(),
            residues: self.residues.clone(),
            counts: offsets.windows(2).map(|w| w[1] - w[0]).collect(),
            deltas,
        };
        Ok(postcard::to_allocvec(&stored)?)
    }

    /// Reads a reference written by [`Reference::to_bytes`], checking its consistency.
    pub fn from_bytes(bytes: &[u8]) -> Result<Reference, AlignError> {
        let bad = |m: &str| AlignError::CorruptIndex(m.to_string());
        let s: Stored = postcard::from_bytes(bytes).map_err(|e| AlignError::CorruptIndex(e.to_string()))?;
        if s.magic != MAGIC || s.version != VERSION {
            return Err(bad("not a plm-align reference of this version"));
        }
        let k = s.k as usize;
        if !K_RANGE.contains(&k) || s.counts.len() != word_count(k) {
            return Err(bad("bad word length"));
        }
        if s.ids.len() != s.lengths.len() || s.residues.iter().any(|&c| c as usize >= ALPHABET_SIZE) {
            return Err(bad("bad sequences"));
        }
        let mut starts = Vec::with_capacity(s.lengths.len() + 1);
        let mut total = 0u64;
        starts.push(0u32);
        for &l in &s.lengths {
            total += l as u64;
            if total > (u32::MAX / 2) as u64 {
                return Err(bad("too many residues"));
            }
            starts.push(total as u32);
        }
        if total != s.residues.len() as u64 {
            return Err(bad("lengths do not add up"));
        }
        let mut offsets = Vec::with_capacity(s.counts.len() + 1);
        let mut acc = 0u64;
        offsets.push(0u32);
        for &c in &s.counts {
            acc += c as u64;
            offsets.push(acc.min(u32::MAX as u64) as u32);
        }
        if acc != s.deltas.len() as u64 {
            return Err(bad("postings do not add up"));
        }
        let mut positions = Vec::with_capacity(s.deltas.len());
        for (w, o) in offsets.windows(2).enumerate() {
            let mut p = 0u64;
            for &d in &s.deltas[o[0] as usize..o[1] as usize] {
                p += d as u64;
                // Every posting must point at an occurrence of its word inside one sequence.
                let pos = p as usize;
                let seq = starts.partition_point(|&x| x as usize <= pos);
                let inside = seq >= 1 && seq < starts.len() && pos + k <= starts[seq] as usize;
                if !inside || word(&s.residues[pos..pos + k]) != Some(w) {
                    return Err(bad("posting does not match its word"));
                }
                positions.push(p as u32);
            }
        }
        Ok(Reference {
            ids: s.ids,
            residues: s.residues,
            starts,
            index: KmerIndex { k, offsets, positions },
        })
    }

    /// Writes [`Reference::to_bytes`] to a file.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<(), AlignError> {
        Ok(std::fs::write(path, self.to_bytes()?)?)
    }

    /// Reads a file written by [`Reference::save`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Reference, AlignError> {
        Reference::from_bytes(&std::fs::read(path)?)
    }
}
