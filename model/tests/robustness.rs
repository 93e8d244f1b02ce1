//! Property tests: no input makes the parsers panic. Sequence cleaning, PDB and mmCIF parsing and
//! the sequence–structure alignment either succeed or return an error, on arbitrary text and on
//! valid records with random corruption.

use plm_model::structure::{map_to_sequence, parse_structure};
use plm_model::tokenizer::clean_sequence;
use proptest::prelude::*;

const ATOM: &str =
    "ATOM      1  CA  ALA A   1      11.104  13.207   2.100  1.00 20.00           C\n";

fn pdb(n: usize) -> String {
    let names = ["ALA", "GLY", "LYS", "TRP", "MET"];
    (0..n)
        .map(|i| {
            format!(
                "ATOM  {:>5}  CA  {} A{:>4}    {:>8.3}{:>8.3}{:>8.3}  1.00 20.00           C\n",
                i + 1,
                names[i % names.len()],
                i + 1,
                3.8 * i as f64,
                (i % 2) as f64,
                0.0
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cleaning_any_text_never_panics(text in any::<String>()) {
        if let Ok(clean) = clean_sequence(&text) {
            prop_assert!(!clean.is_empty());
            prop_assert!(clean.bytes().all(|b| b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn parsing_any_text_never_panics(text in any::<String>(), chain in proptest::option::of("[A-Za-z0-9]{0,3}")) {
        let _ = parse_structure(&text, chain.as_deref());
    }

    #[test]
    fn corrupted_records_never_panic(
        n in 1usize..30,
        cuts in proptest::collection::vec((0usize..3000, any::<u8>()), 0..8),
    ) {
        let mut bytes = pdb(n).into_bytes();
        for (at, byte) in cuts {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(trace) = parse_structure(&text, None) {
            let _ = map_to_sequence("AGKWMAGKWMAGKWMAGKWMAGKWMAGKWM", &trace);
            let _ = map_to_sequence("MKT", &trace);
        }
    }

    #[test]
    fn truncated_mmcif_never_panics(cut in 0usize..400) {
        let cif = "data_x\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n_atom_site.label_atom_id\n_atom_site.label_comp_id\n_atom_site.label_asym_id\n_atom_site.label_seq_id\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n_atom_site.Cartn_z\n_atom_site.auth_asym_id\n_atom_site.auth_seq_id\n_atom_site.pdbx_PDB_model_num\nATOM 1 C CA ALA A 1 1.0 2.0 3.0 A 1 1\nATOM 2 C CA GLY A 2 4.8 2.0 3.0 A 2 1\n";
        let end = cif.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(cif.len());
        let _ = parse_structure(&cif[..end], None);
    }
}

#[test]
fn the_generated_records_are_valid() {
    // The corruption test starts from structures that parse.
    let trace = parse_structure(&pdb(10), None).unwrap();
    assert!(map_to_sequence("AGKWMAGKWM", &trace).is_ok());
    assert!(parse_structure(ATOM, None).is_ok());
}
