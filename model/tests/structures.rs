//! Real PDB and mmCIF files from `../shared/data/structures`: parsing, alignment to the
//! sequence and residue graphs. Skipped, with a message, where the data is absent.

use std::path::PathBuf;

use plm_model::graph::{GraphOptions, ResidueGraph};
use plm_model::structure::{map_to_sequence, parse_structure};
use plm_model::surface::ChainGeometry;

const UBIQUITIN: &str =
    "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG";
const CRAMBIN: &str = "TTCCPSIVARSNFNVCRLPGTPEALCATYTGCIIIPGATCPGDYAN";

fn structure(name: &str) -> Option<String> {
    let path = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../../shared/data/structures")
    .join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) => {
            eprintln!(
                "skipped: {} not found (the shared data directory is absent)",
                path.display()
            );
            None
        }
    }
}

#[test]
fn ubiquitin_pdb_matches_its_sequence_and_has_long_range_contacts() {
    let Some(text) = structure("pdb1ubi.pdb") else {
        return;
    };
    let trace = parse_structure(&text, None).unwrap();
    assert_eq!(trace.chain, "A");
    assert_eq!(trace.sequence(), UBIQUITIN);
    let mapping = map_to_sequence(UBIQUITIN, &trace).unwrap();
    assert!(mapping.iter().enumerate().all(|(i, m)| *m == Some(i)));
    let options = GraphOptions::default();
    let graph = ResidueGraph::from_structure(UBIQUITIN.len(), &trace, &mapping, &options).unwrap();
    let chain_only = ResidueGraph::sequence_only(UBIQUITIN.len(), &options);
    assert!(
        graph.num_edges() > chain_only.num_edges() + 50,
        "{} edges",
        graph.num_edges()
    );
    // The first and second β-strands pair: residues 1-7 and 10-17 (0-based 2 and 14 are in contact).
    assert!(graph.has_edge(2, 14) || graph.has_edge(3, 14) || graph.has_edge(2, 15));
    // With a His-tag in front, the mapping shifts and still validates.
    let tagged = format!("MGSSHHHHHH{UBIQUITIN}");
    let shifted = map_to_sequence(&tagged, &trace).unwrap();
    assert_eq!(shifted[0], Some(10));
}

#[test]
fn alternate_locations_give_one_residue_each() {
    let Some(text) = structure("pdb1ejg.pdb") else {
        return;
    };
    let trace = parse_structure(&text, None).unwrap();
    assert_eq!(trace.sequence(), CRAMBIN);
}

#[test]
fn only_the_first_model_of_an_nmr_ensemble_is_read() {
    let Some(text) = structure("pdb2k39_truncated.pdb") else {
        return;
    };
    let trace = parse_structure(&text, None).unwrap();
    assert_eq!(trace.residues.len(), 10);
}

#[test]
fn mmcif_chains_can_be_chosen() {
    let Some(text) = structure("mmcif_6yfy.cif") else {
        return;
    };
    let a = parse_structure(&text, None).unwrap();
    let b = parse_structure(&text, Some("B")).unwrap();
    assert_eq!(b.chain, "B");
    assert!(!a.residues.is_empty() && !b.residues.is_empty());
    let err = parse_structure(&text, Some("Z")).unwrap_err().to_string();
    assert!(err.contains("chain 'Z' not found"), "{err}");
}

#[test]
fn deepfri_chains_parse_and_align_to_themselves() {
    for name in [
        "deepfri_1S3P-A.pdb",
        "deepfri_2J9H-A.pdb",
        "deepfri_2PE5-B.pdb",
        "deepfri_2W83-E.pdb",
    ] {
        let Some(text) = structure(name) else { return };
        let trace = parse_structure(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let seq = trace.sequence();
        assert!(seq.len() > 30, "{name}: {} residues", seq.len());
        map_to_sequence(&seq, &trace).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The geometry the interface prior and the residue graph read holds every C-alpha pair
/// within the asked radius and no other, marks a tag the structure lacks as unresolved, and
/// gives exposed residues fewer neighbours.
#[test]
fn ubiquitin_geometry_holds_its_close_pairs_and_reads_burial() {
    let Some(text) = structure("pdb1ubi.pdb") else {
        return;
    };
    let trace = parse_structure(&text, None).unwrap();
    let tagged = format!("MGSSHHHHHH{UBIQUITIN}");
    let mapping = map_to_sequence(&tagged, &trace).unwrap();
    for radius in [8.0, 20.0] {
        let geometry = ChainGeometry::from_trace(tagged.len(), &trace, &mapping, radius);
        let kept: std::collections::HashSet<(usize, usize)> = geometry.contacts(radius).collect();
        let mut expected = std::collections::HashSet::new();
        for (ka, pa) in mapping.iter().enumerate() {
            for (kb, pb) in mapping.iter().enumerate().skip(ka + 1) {
                if let (Some(pa), Some(pb)) = (pa, pb) {
                    if trace.distance(ka, kb) <= radius {
                        expected.insert((*pa, *pb));
                    }
                }
            }
        }
        assert_eq!(kept, expected, "radius {radius}");
    }
    let geometry = ChainGeometry::from_trace(tagged.len(), &trace, &mapping, 8.0);
    assert!(
        geometry.resolved[..10].iter().all(|r| !r),
        "the tag has no coordinates"
    );
    assert!(geometry.resolved[10..].iter().all(|r| *r));
    let features = geometry.features().unwrap();
    assert!(features[..10].iter().all(Option::is_none));
    // The C-terminal tail (G75, G76) is flexible and exposed; V26 sits in the core of the
    // helix packing against the sheet.
    let within_12 = |i: usize| features[10 + i].unwrap()[2];
    assert!(
        within_12(75) < within_12(25),
        "{} vs {}",
        within_12(75),
        within_12(25)
    );
}
