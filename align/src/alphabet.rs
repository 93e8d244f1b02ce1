//! Amino-acid alphabet: letters to compact codes.
//!
//! Codes 0..20 are the standard residues in NCBI matrix order (`ARNDCQEGHILKMFPSTWYV`), then
//! B (20), Z (21) and X (22). Rare letters are folded: U (selenocysteine) to C, O (pyrrolysine)
//! to K, J (I or L) to X. Lower case is accepted. Anything that is not an ASCII letter is an
//! error.

use crate::AlignError;

/// Letters of the codes, in code order.
pub const LETTERS: &[u8; ALPHABET_SIZE] = b"ARNDCQEGHILKMFPSTWYVBZX";
/// Number of codes.
pub const ALPHABET_SIZE: usize = 23;
/// Number of standard residues (codes below this are the 20 amino acids).
pub const STANDARD: usize = 20;
/// Code of the unknown residue X.
pub const UNKNOWN: u8 = 22;

const INVALID: u8 = u8::MAX;

const fn build_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut c = 0;
    while c < ALPHABET_SIZE {
        let upper = LETTERS[c];
        t[upper as usize] = c as u8;
        t[(upper + 32) as usize] = c as u8;
        c += 1;
    }
    let folded: [(u8, u8); 3] = [(b'U', 4), (b'O', 11), (b'J', UNKNOWN)];
    let mut f = 0;
    while f < folded.len() {
        t[folded[f].0 as usize] = folded[f].1;
        t[(folded[f].0 + 32) as usize] = folded[f].1;
        f += 1;
    }
    t
}

static TABLE: [u8; 256] = build_table();

/// Encodes a sequence of letters; errors on an empty sequence or a non-letter.
pub fn encode(sequence: &str) -> Result<Vec<u8>, AlignError> {
    if sequence.is_empty() {
        return Err(AlignError::EmptySequence);
    }
    sequence
        .char_indices()
        .enumerate()
        .map(|(position, (byte_at, residue))| {
            let code = if residue.is_ascii() {
                TABLE[sequence.as_bytes()[byte_at] as usize]
            } else {
                INVALID
            };
            if code == INVALID {
                Err(AlignError::InvalidResidue { position, residue })
            } else {
                Ok(code)
            }
        })
        .collect()
}

/// Letter of a code (upper case); X for anything out of range.
pub fn letter(code: u8) -> u8 {
    LETTERS.get(code as usize).copied().unwrap_or(b'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_letters_and_rejects_others() {
        for c in b'A'..=b'Z' {
            let s = (c as char).to_string();
            assert!(encode(&s).is_ok(), "{s}");
            assert_eq!(encode(&s.to_lowercase()).ok(), encode(&s).ok());
        }
        assert_eq!(encode("ACW").ok(), Some(vec![0, 4, 17]));
        assert_eq!(encode("U").ok(), Some(vec![4]));
        assert!(matches!(encode(""), Err(AlignError::EmptySequence)));
        assert!(matches!(
            encode("AC-D"),
            Err(AlignError::InvalidResidue {
                position: 2,
                residue: '-'
            })
        ));
        assert!(matches!(
            encode("Aé*"),
            Err(AlignError::InvalidResidue {
                position: 1,
                residue: 'é'
            })
        ));
    }

    #[test]
    fn letters_round_trip() {
        for (code, &l) in LETTERS.iter().enumerate() {
            assert_eq!(letter(code as u8), l);
        }
    }
}
