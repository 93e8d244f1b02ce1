//! Protein structures: the C-alpha trace of one chain of a PDB or mmCIF text, and its mapping
//! onto a sequence.
//!
//! Parsing is done by `pdbtbx` (alternate locations, insertion codes, several models, HETATM
//! records); this module picks one chain, keeps the first conformer of each amino-acid residue
//! that has a C-alpha atom (modified residues such as MSE count as their parent amino acid,
//! waters and ligands are skipped) and aligns the trace to the query sequence, so missing
//! residues and expression tags are handled and a structure of another protein is refused.

use std::io::BufReader;

use pdbtbx::{Format, ReadOptions, StrictnessLevel};

use crate::error::{PlmError, Result};

/// One residue of a C-alpha trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceResidue {
    /// One-letter amino-acid code (`X` for unusual amino acids).
    pub code: char,
    /// Residue number as written in the file.
    pub number: isize,
    /// Insertion code, if any.
    pub insertion: Option<String>,
    /// C-alpha coordinates in Å.
    pub ca: [f64; 3],
}

/// The C-alpha trace of one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTrace {
    /// Chain identifier.
    pub chain: String,
    /// Residues in file order.
    pub residues: Vec<TraceResidue>,
}

impl ChainTrace {
    /// The residues' one-letter codes.
    pub fn sequence(&self) -> String {
        self.residues.iter().map(|r| r.code).collect()
    }

    /// Distance in Å between the C-alpha atoms of residues `a` and `b`.
    pub fn distance(&self, a: usize, b: usize) -> f64 {
        let (p, q) = (self.residues[a].ca, self.residues[b].ca);
        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
    }
}

/// One-letter code of an amino-acid residue name, including common modified residues.
pub fn one_letter_code(name: &str) -> Option<char> {
    let code = match name.trim().to_ascii_uppercase().as_str() {
        "ALA" => 'A',
        "ARG" => 'R',
        "ASN" => 'N',
        "ASP" => 'D',
        "CYS" => 'C',
        "GLN" => 'Q',
        "GLU" => 'E',
        "GLY" => 'G',
        "HIS" => 'H',
        "ILE" => 'I',
        "LEU" => 'L',
        "LYS" => 'K',
        "MET" => 'M',
        "PHE" => 'F',
        "PRO" => 'P',
        "SER" => 'S',
        "THR" => 'T',
        "TRP" => 'W',
        "TYR" => 'Y',
        "VAL" => 'V',
        "SEC" => 'U',
        "PYL" => 'O',
        "ASX" => 'B',
        "GLX" => 'Z',
        // Frequent modified residues, counted as their parent amino acid.
        "MSE" => 'M',
        "SEP" => 'S',
        "TPO" => 'T',
        "PTR" => 'Y',
        "HYP" => 'P',
        "MLY" | "M3L" | "KCX" | "LLP" => 'K',
        "CSO" | "CSD" | "CME" | "OCS" | "CAS" => 'C',
        "HIC" | "NEP" => 'H',
        "PCA" => 'E',
        "UNK" => 'X',
        _ => return None,
    };
    Some(code)
}

/// Whether the text looks like mmCIF (rather than PDB).
fn is_mmcif(text: &str) -> bool {
    let start = text.trim_start();
    start.starts_with("data_") || text.contains("\n_atom_site.") || start.starts_with("_atom_site.")
}

/// Parses a PDB or mmCIF text (detected from its content) and returns the C-alpha trace of
/// `chain`, or of the first chain with amino acids when `chain` is `None`.
pub fn parse_structure(text: &str, chain: Option<&str>) -> Result<ChainTrace> {
    if text.trim().is_empty() {
        return Err(PlmError::InvalidStructure("empty structure text".into()));
    }
    let format = if is_mmcif(text) {
        Format::Mmcif
    } else {
        Format::Pdb
    };
    let mut options = ReadOptions::new();
    options
        .set_format(format)
        .set_level(StrictnessLevel::Loose)
        .set_only_first_model(true)
        .set_discard_hydrogens(true);
    // Only coordinate records matter here; dropping the rest (MASTER checksums, remarks,
    // connectivity) keeps bookkeeping errors in otherwise good files from failing the parse.
    let filtered;
    let text = if matches!(format, Format::Pdb) {
        filtered = text
            .lines()
            .filter(|l| {
                ["ATOM", "HETATM", "MODEL", "ENDMDL", "TER", "END"]
                    .iter()
                    .any(|r| l.starts_with(r))
            })
            .collect::<Vec<_>>()
            .join("\n");
        filtered.as_str()
    } else {
        text
    };
    // pdbtbx is not guaranteed panic-free on arbitrary text; a panic must not escape.
    let parsed = std::panic::catch_unwind(|| options.read_raw(BufReader::new(text.as_bytes())))
        .map_err(|_| {
            PlmError::InvalidStructure("the structure parser failed on this text".into())
        })?;
    let (pdb, _warnings) = parsed.map_err(|errors| {
        let first = errors
            .first()
            .map(|e| e.short_description().to_string())
            .unwrap_or_default();
        PlmError::InvalidStructure(format!(
            "cannot parse the {} text: {first}",
            if matches!(format, Format::Mmcif) {
                "mmCIF"
            } else {
                "PDB"
            }
        ))
    })?;

    let mut traces = Vec::new();
    for c in pdb.chains() {
        let mut residues = Vec::new();
        for residue in c.residues() {
            // The first conformer: the blank or first alternate location.
            let Some(conformer) = residue.conformers().next() else {
                continue;
            };
            let Some(code) = one_letter_code(conformer.name()) else {
                continue;
            };
            let Some(ca) = conformer.atoms().find(|a| a.name().trim() == "CA") else {
                continue;
            };
            let (x, y, z) = ca.pos();
            let (number, insertion) = residue.id();
            residues.push(TraceResidue {
                code,
                number,
                insertion: insertion.map(str::to_string),
                ca: [x, y, z],
            });
        }
        if !residues.is_empty() {
            traces.push(ChainTrace {
                chain: c.id().to_string(),
                residues,
            });
        }
    }
    let available: Vec<String> = traces.iter().map(|t| t.chain.clone()).collect();
    match chain {
        None => traces.into_iter().next().ok_or_else(|| {
            PlmError::InvalidStructure("no amino-acid residues with C-alpha atoms found".into())
        }),
        Some(wanted) => traces
            .into_iter()
            .find(|t| t.chain == wanted)
            .ok_or_else(|| {
                PlmError::InvalidStructure(format!(
                    "chain '{wanted}' not found; chains with amino acids: {}",
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                ))
            }),
    }
}

/// Minimum identity over aligned residue pairs for a structure to be accepted for a sequence.
pub const MIN_IDENTITY: f64 = 0.9;
/// Minimum share of the structure's residues that must align to the sequence.
pub const MIN_COVERAGE: f64 = 0.5;

/// Maps each residue of `trace` to a 0-based position of `sequence` (or `None` where the
/// alignment puts a gap), by a global alignment with free end gaps.
///
/// Errors when fewer than [`MIN_COVERAGE`] of the structure's residues align or the identity
/// of the aligned pairs is below [`MIN_IDENTITY`]: the structure is of another protein.
pub fn map_to_sequence(sequence: &str, trace: &ChainTrace) -> Result<Vec<Option<usize>>> {
    let seq: Vec<u8> = sequence.bytes().map(|b| b.to_ascii_uppercase()).collect();
    let str_seq: Vec<u8> = trace.residues.iter().map(|r| r.code as u8).collect();
    let mapping = semi_global_alignment(&str_seq, &seq);
    let mut aligned = 0usize;
    let mut identical = 0usize;
    for (i, m) in mapping.iter().enumerate() {
        if let Some(j) = m {
            aligned += 1;
            if str_seq[i] == seq[*j] {
                identical += 1;
            }
        }
    }
    let coverage = aligned as f64 / str_seq.len().max(1) as f64;
    let identity = identical as f64 / aligned.max(1) as f64;
    if coverage < MIN_COVERAGE || identity < MIN_IDENTITY {
        return Err(PlmError::InvalidStructure(format!(
            "chain {} does not match the sequence: {:.0}% identity over {} of its {} residues (need {:.0}% identity over at least {:.0}%)",
            trace.chain,
            identity * 100.0,
            aligned,
            str_seq.len(),
            MIN_IDENTITY * 100.0,
            MIN_COVERAGE * 100.0
        )));
    }
    Ok(mapping)
}

/// Needleman–Wunsch alignment of `a` (structure) against `b` (sequence) with free gaps at both
/// ends of `b`, scoring +3 identity, -2 mismatch, -1 per sequence residue missing from the
/// structure (unresolved loops are common) and -3 per structure residue absent from the
/// sequence. Returns, for each element of `a`, the aligned index in `b`.
fn semi_global_alignment(a: &[u8], b: &[u8]) -> Vec<Option<usize>> {
    const MATCH: i32 = 3;
    const MISMATCH: i32 = -2;
    const GAP: i32 = -3;
    const MISSING: i32 = -1;
    let (n, m) = (a.len(), b.len());
    let width = m + 1;
    let mut score = vec![0i32; (n + 1) * width];
    // 0 = diagonal, 1 = up (gap in b), 2 = left (gap in a).
    let mut from = vec![0u8; (n + 1) * width];
    for i in 1..=n {
        score[i * width] = GAP * i as i32;
        from[i * width] = 1;
    }
    for j in 1..=m {
        // Leading sequence residues missing from the structure cost nothing.
        score[j] = 0;
        from[j] = 2;
    }
    for i in 1..=n {
        for j in 1..=m {
            let s = if a[i - 1] == b[j - 1] {
                MATCH
            } else {
                MISMATCH
            };
            let diag = score[(i - 1) * width + j - 1] + s;
            let up = score[(i - 1) * width + j] + GAP;
            // Sequence residues missing from the structure; free after its last residue.
            let left_gap = if i == n { 0 } else { MISSING };
            let left = score[i * width + j - 1] + left_gap;
            let (best, dir) = if diag >= up && diag >= left {
                (diag, 0)
            } else if up >= left {
                (up, 1)
            } else {
                (left, 2)
            };
            score[i * width + j] = best;
            from[i * width + j] = dir;
        }
    }
    let mut mapping = vec![None; n];
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        match from[i * width + j] {
            0 if i > 0 && j > 0 => {
                mapping[i - 1] = Some(j - 1);
                i -= 1;
                j -= 1;
            }
            1 if i > 0 => i -= 1,
            _ if j > 0 => j -= 1,
            _ => i -= 1,
        }
    }
    mapping
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn atom(
        serial: usize,
        name: &str,
        alt: char,
        res: &str,
        chain: &str,
        num: i32,
        ins: char,
        x: f64,
    ) -> String {
        format!(
            "ATOM  {serial:>5} {name:<4}{alt}{res:>3} {chain}{num:>4}{ins}   {x:>8.3}{:>8.3}{:>8.3}  1.00 20.00           {}\n",
            0.0,
            0.0,
            &name.trim()[..1]
        )
    }

    /// A PDB text with one CA per residue along the x axis, 3.8 Å apart.
    fn pdb(chain: &str, residues: &[&str]) -> String {
        let mut s = String::new();
        for (i, r) in residues.iter().enumerate() {
            s += &atom(
                i + 1,
                " CA ",
                ' ',
                r,
                chain,
                i as i32 + 1,
                ' ',
                3.8 * i as f64,
            );
        }
        s + "END\n"
    }

    #[test]
    fn reads_a_pdb_chain() {
        let t = parse_structure(&pdb("A", &["MET", "LYS", "THR"]), None).unwrap();
        assert_eq!(t.chain, "A");
        assert_eq!(t.sequence(), "MKT");
        assert!((t.distance(0, 2) - 7.6).abs() < 1e-6);
    }

    #[test]
    fn alternate_locations_keep_the_first_conformer() {
        let mut s = atom(1, " CA ", ' ', "MET", "A", 1, ' ', 0.0);
        s += &atom(2, " CA ", 'A', "LYS", "A", 2, ' ', 3.8);
        s += &atom(3, " CA ", 'B', "LYS", "A", 2, ' ', 9.0);
        s += "END\n";
        let t = parse_structure(&s, None).unwrap();
        assert_eq!(t.sequence(), "MK");
        assert!((t.residues[1].ca[0] - 3.8).abs() < 1e-6);
    }

    #[test]
    fn insertion_codes_are_separate_residues() {
        let mut s = atom(1, " CA ", ' ', "MET", "A", 52, ' ', 0.0);
        s += &atom(2, " CA ", ' ', "LYS", "A", 52, 'A', 3.8);
        s += &atom(3, " CA ", ' ', "THR", "A", 53, ' ', 7.6);
        s += "END\n";
        let t = parse_structure(&s, None).unwrap();
        assert_eq!(t.sequence(), "MKT");
        assert_eq!(t.residues[1].insertion.as_deref(), Some("A"));
    }

    #[test]
    fn hetatm_modified_residues_count_and_ligands_do_not() {
        let mut s = atom(1, " CA ", ' ', "MET", "A", 1, ' ', 0.0);
        s += &atom(2, " CA ", ' ', "MSE", "A", 2, ' ', 3.8).replacen("ATOM  ", "HETATM", 1);
        s += &atom(3, "CA  ", ' ', " CA", "A", 301, ' ', 20.0).replacen("ATOM  ", "HETATM", 1);
        s += &atom(4, " O  ", ' ', "HOH", "A", 401, ' ', 30.0).replacen("ATOM  ", "HETATM", 1);
        s += "END\n";
        let t = parse_structure(&s, None).unwrap();
        assert_eq!(t.sequence(), "MM");
    }

    #[test]
    fn chain_selection_and_unknown_chain() {
        let s = pdb("A", &["MET", "LYS"]).replace("END\n", "") + &pdb("B", &["GLY", "GLY", "GLY"]);
        assert_eq!(parse_structure(&s, Some("B")).unwrap().sequence(), "GGG");
        let err = parse_structure(&s, Some("C")).unwrap_err().to_string();
        assert!(
            err.contains("chain 'C' not found") && err.contains("A, B"),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_empty_text_are_errors() {
        assert!(parse_structure("", None).is_err());
        let err = parse_structure("hello world\n", None).unwrap_err();
        assert!(matches!(err, PlmError::InvalidStructure(_)), "{err}");
    }

    #[test]
    fn alignment_handles_missing_residues_and_tags() {
        // Structure lacks residues 3-4 of the sequence and the sequence has a leading tag.
        let trace = parse_structure(
            &pdb(
                "A",
                &[
                    "MET", "LYS", "ALA", "GLY", "TRP", "HIS", "ILE", "LEU", "VAL", "SER",
                ],
            ),
            None,
        )
        .unwrap();
        let sequence = "GSHMKTTAGWHILVS";
        // Structure: M K A G W H I L V S; sequence positions: M=3 K=4 (T T missing) A=7 G=8 ...
        let m = map_to_sequence(sequence, &trace).unwrap();
        assert_eq!(m[0], Some(3));
        assert_eq!(m[1], Some(4));
        assert_eq!(m[2], Some(7));
        assert_eq!(m[9], Some(14));
    }

    #[test]
    fn alignment_refuses_another_protein() {
        let trace = parse_structure(&pdb("A", &["TRP"; 12]), None).unwrap();
        let err = map_to_sequence("MKTAYIAKQRQISFVKSHFSRQ", &trace)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match the sequence"), "{err}");
    }
}
