//! Protein homology search against a labelled reference set.
//!
//! [`Reference::build`] encodes `(id, sequence)` entries and indexes their 3-mers once; the
//! index serialises to a compact binary form ([`Reference::to_bytes`]). [`Reference::search`]
//! seeds with BLOSUM62 word neighbourhoods and the two-hit rule ([`prefilter`]), aligns the
//! candidates with an exact striped SIMD Smith–Waterman ([`QueryProfile`]; BLOSUM62, gaps 11/1
//! as BLAST), scores them with Karlin–Altschul statistics ([`KarlinAltschul`]) and recovers the
//! alignment columns of the reported hits.

pub mod align;
pub mod alphabet;
mod error;
pub mod index;
pub mod matrix;
pub mod prefilter;
mod search;
pub mod simd;
pub mod stats;
mod store;
mod traceback;

pub use align::{local_alignment_scalar, local_score_scalar, Alignment, LocalScore};
pub use error::AlignError;
pub use index::KmerIndex;
pub use matrix::GapCosts;
pub use prefilter::PrefilterParams;
pub use search::{align_pair, Hit, IndexParams, Reference, SearchParams, GAPS, STATS};
pub use simd::QueryProfile;
pub use stats::KarlinAltschul;
