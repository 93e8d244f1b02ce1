//! Protein tokenizer: strict sequence validation, then the ESM vocabulary through the `tokenizers` crate.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{PlmError, Result};

/// The 33-token ESM-2 vocabulary, in id order.
pub const ESM_VOCAB: [&str; 33] = [
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K",
    "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>",
    "<mask>",
];

/// Residue letters accepted in input sequences: 20 standard amino acids plus X, B, Z, U, O.
pub const ACCEPTED_RESIDUES: &str = "ACDEFGHIKLMNPQRSTVWYXBZUO";

/// The 20 standard amino acids, alphabetical.
pub const STANDARD_AMINO_ACIDS: &str = "ACDEFGHIKLMNPQRSTVWY";

/// [`clean_sequence`] of each sequence; an error names the failing one's 1-based place when
/// there are several.
pub fn clean_sequences(sequences: &[&str]) -> Result<Vec<String>> {
    sequences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            clean_sequence(s).map_err(|e| {
                if sequences.len() > 1 {
                    PlmError::InvalidArgument(format!("sequence {}: {e}", i + 1))
                } else {
                    e
                }
            })
        })
        .collect()
}

/// Removes whitespace and upper-cases a pasted sequence, rejecting any non-residue character.
///
/// Positions in errors are 1-based and count characters of the input as given.
pub fn clean_sequence(raw: &str) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    for (index, ch) in raw.chars().enumerate() {
        if ch.is_whitespace() {
            continue;
        }
        let up = ch.to_ascii_uppercase();
        if !up.is_ascii() || !ACCEPTED_RESIDUES.contains(up) {
            return Err(PlmError::InvalidResidue {
                character: ch,
                position: index + 1,
            });
        }
        out.push(up);
    }
    if out.is_empty() {
        return Err(PlmError::EmptySequence);
    }
    Ok(out)
}

/// Token ids of the special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<cls>`, prepended to every sequence.
    pub cls: u32,
    /// `<pad>`.
    pub pad: u32,
    /// `<eos>`, appended to every sequence.
    pub eos: u32,
    /// `<unk>`.
    pub unk: u32,
    /// `<mask>`.
    pub mask: u32,
}

/// Tokenizer for protein sequences with the ESM vocabulary.
#[derive(Clone)]
pub struct ProteinTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
    vocab_size: usize,
}

impl std::fmt::Debug for ProteinTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProteinTokenizer")
            .field("special", &self.special)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

fn tokenizer_error(e: impl std::fmt::Display) -> PlmError {
    PlmError::Internal(format!("tokenizer: {e}"))
}

impl ProteinTokenizer {
    /// Builds the tokenizer for a vocabulary given in id order (e.g. ESM's `vocab.txt`).
    pub fn from_vocab(tokens: &[&str]) -> Result<Self> {
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| tokenizer_error(format!("vocabulary has no {t} token")))
        };
        let (cls, eos) = (id("<cls>")?, id("<eos>")?);
        let model = WordLevel::builder()
            .vocab(vocab.clone().into_iter().collect())
            .unk_token("<unk>".into())
            .build()
            .map_err(tokenizer_error)?;
        let mut inner = Tokenizer::new(model);
        let split = Split::new(
            SplitPattern::Regex(".".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tokenizer_error)?;
        inner.with_pre_tokenizer(Some(split));
        let template = TemplateProcessing::builder()
            .try_single("<cls> $A <eos>")
            .map_err(tokenizer_error)?
            .try_pair("<cls> $A <eos> $B:1 <eos>:1")
            .map_err(tokenizer_error)?
            .special_tokens(vec![("<cls>", cls), ("<eos>", eos)])
            .build()
            .map_err(tokenizer_error)?;
        inner.with_post_processor(Some(template));
        let specials: Vec<AddedToken> = ["<cls>", "<pad>", "<eos>", "<unk>", "<mask>"]
            .iter()
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(t.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);
        Self::from_tokenizer(inner)
    }

    /// The standard ESM-2 tokenizer.
    pub fn esm() -> Self {
        Self::from_vocab(&ESM_VOCAB).expect("the built-in ESM vocabulary is valid")
    }

    /// Wraps a `tokenizers` tokenizer whose vocabulary contains the ESM special tokens.
    pub fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| tokenizer_error(format!("vocabulary has no {t} token")))
        };
        let special = SpecialTokens {
            cls: id("<cls>")?,
            pad: id("<pad>")?,
            eos: id("<eos>")?,
            unk: id("<unk>")?,
            mask: id("<mask>")?,
        };
        for residue in ACCEPTED_RESIDUES.chars() {
            id(&residue.to_string())?;
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            special,
            vocab_size,
        })
    }

    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| PlmError::bad_file(path, e))?;
        Self::from_tokenizer(inner).map_err(|e| PlmError::bad_file(path, e))
    }

    /// Loads ESM's `vocab.txt` (one token a line, in id order), as in Hugging Face hub snapshots.
    pub fn from_vocab_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PlmError::bad_file(path, e))?;
        let tokens: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Self::from_vocab(&tokens).map_err(|e| PlmError::bad_file(path, e))
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| PlmError::bad_file(path, e))
    }

    /// Special token ids.
    pub fn special(&self) -> SpecialTokens {
        self.special
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Token id of a residue letter (upper case).
    pub fn residue_id(&self, residue: char) -> Option<u32> {
        self.inner.token_to_id(residue.encode_utf8(&mut [0; 4]))
    }

    /// Encodes an already cleaned sequence as `<cls> residues <eos>`.
    pub fn encode_clean(&self, clean: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(clean, true).map_err(tokenizer_error)?;
        let ids = encoding.get_ids().to_vec();
        if ids.len() != clean.len() + 2 {
            return Err(tokenizer_error(format!(
                "expected {} tokens for {} residues, got {}",
                clean.len() + 2,
                clean.len(),
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// Validates and encodes a raw sequence.
    pub fn encode(&self, raw: &str) -> Result<Vec<u32>> {
        self.encode_clean(&clean_sequence(raw)?)
    }

    /// Token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_whitespace_and_case() {
        assert_eq!(clean_sequence("  mkT\nAY\r\n ").unwrap(), "MKTAY");
    }

    #[test]
    fn rejects_invalid_character_with_position() {
        match clean_sequence("MK T1A") {
            Err(PlmError::InvalidResidue {
                character,
                position,
            }) => {
                assert_eq!(character, '1');
                assert_eq!(position, 5);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            clean_sequence("MKJ"),
            Err(PlmError::InvalidResidue {
                character: 'J',
                position: 3
            })
        ));
        assert!(matches!(
            clean_sequence("MKé"),
            Err(PlmError::InvalidResidue {
                character: 'é',
                position: 3
            })
        ));
        assert!(matches!(
            clean_sequence("MK*"),
            Err(PlmError::InvalidResidue {
                character: '*',
                position: 3
            })
        ));
    }

    #[test]
    fn rejects_empty() {
        assert!(matches!(clean_sequence(""), Err(PlmError::EmptySequence)));
        assert!(matches!(
            clean_sequence(" \n\t"),
            Err(PlmError::EmptySequence)
        ));
    }

    #[test]
    fn accepts_ambiguous_and_rare_codes() {
        assert_eq!(clean_sequence("xbzuo").unwrap(), "XBZUO");
    }

    #[test]
    fn encodes_with_cls_and_eos_in_esm_ids() {
        let tok = ProteinTokenizer::esm();
        let ids = tok.encode("MKTA").unwrap();
        assert_eq!(ids, vec![0, 20, 15, 11, 5, 2]);
        let all = tok.encode(ACCEPTED_RESIDUES).unwrap();
        for (ch, id) in ACCEPTED_RESIDUES.chars().zip(&all[1..]) {
            assert_eq!(ESM_VOCAB[*id as usize], ch.to_string());
        }
    }

    #[test]
    fn tokenizer_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = ProteinTokenizer::esm();
        tok.save(&path).unwrap();
        let back = ProteinTokenizer::from_file(&path).unwrap();
        assert_eq!(
            back.encode("MKTAYIAK").unwrap(),
            tok.encode("MKTAYIAK").unwrap()
        );
        assert_eq!(back.special(), tok.special());
    }

    #[test]
    fn vocab_txt_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, ESM_VOCAB.join("\n")).unwrap();
        let tok = ProteinTokenizer::from_vocab_file(&path).unwrap();
        assert_eq!(tok.encode("MKTA").unwrap(), vec![0, 20, 15, 11, 5, 2]);
        assert_eq!(tok.vocab_size(), 33);
    }
}
