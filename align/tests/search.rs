//! The search API on synthetic references.

mod common;

use common::Rng;
use plm_align::{AlignError, Reference, SearchParams, STATS};

fn reference(n: usize, seed: u64) -> (Reference, Vec<(String, String)>) {
    let mut rng = Rng(seed);
    let entries: Vec<(String, String)> = (0..n)
        .map(|i| {
            let len = 80 + rng.below(400);
            (format!("P{i:05}"), rng.protein(len))
        })
        .collect();
    (Reference::build(entries.clone()).unwrap(), entries)
}

#[test]
fn exact_query_finds_itself_first() {
    let (r, entries) = reference(500, 11);
    let params = SearchParams {
        with_pairs: true,
        ..SearchParams::default()
    };
    for (id, seq) in entries.iter().step_by(37) {
        let hits = r.search(seq, &params).unwrap();
        let top = &hits[0];
        assert_eq!(&top.target_id, id);
        assert_eq!(top.identity, 1.0);
        assert_eq!((top.query_coverage, top.target_coverage), (1.0, 1.0));
        assert_eq!((top.query_start, top.query_end), (0, seq.len()));
        assert_eq!(top.pairs.len(), seq.len());
        assert!(top.evalue < 1e-20, "{}", top.evalue);
        assert!(hits.windows(2).all(|w| w[0].bit_score >= w[1].bit_score));
    }
}

#[test]
fn mutated_query_finds_its_source() {
    let (r, entries) = reference(500, 12);
    let mut rng = Rng(99);
    for (id, seq) in entries.iter().step_by(23) {
        let q = rng.mutate(seq, 0.4);
        let hits = r.search(&q, &SearchParams::default()).unwrap();
        assert_eq!(
            hits.first().map(|h| h.target_id.as_str()),
            Some(id.as_str()),
            "{q}"
        );
        let h = &hits[0];
        assert!(h.identity > 0.4 && h.identity < 0.9, "{}", h.identity);
        assert!(h.query_end <= q.len() && h.target_end <= seq.len());
    }
}

#[test]
fn unrelated_query_has_no_hits_under_strict_evalue() {
    let (r, _) = reference(500, 13);
    let mut rng = Rng(1234);
    for _ in 0..10 {
        let q = rng.protein(300);
        let params = SearchParams {
            max_evalue: 1e-3,
            ..SearchParams::default()
        };
        assert!(r.search(&q, &params).unwrap().is_empty());
    }
}

#[test]
fn evalue_decreases_and_bits_increase_with_score() {
    let mut last = (f64::INFINITY, f64::NEG_INFINITY);
    for s in 1..500 {
        let e = STATS.evalue(s, 300, 6_000_000);
        let b = STATS.bit_score(s);
        assert!(e < last.0 && b > last.1);
        last = (e, b);
    }
}

#[test]
fn align_to_reports_scalar_consistent_hit() {
    let (r, entries) = reference(20, 14);
    let h = r.align_to(&entries[3].1, 3, true).unwrap().unwrap();
    assert_eq!(
        (h.identity, h.query_coverage, h.target_coverage),
        (1.0, 1.0, 1.0)
    );
    assert!(r.align_to(&entries[3].1, 99, false).unwrap().is_none());
}

#[test]
fn invalid_input_gives_typed_errors() {
    let (r, _) = reference(5, 15);
    let p = SearchParams::default();
    assert!(matches!(r.search("", &p), Err(AlignError::EmptySequence)));
    assert!(matches!(
        r.search("MKV1L", &p),
        Err(AlignError::InvalidResidue {
            position: 3,
            residue: '1'
        })
    ));
    let bad = Reference::build([("ok", "MKVL"), ("bad", "MK L")]);
    assert!(matches!(bad, Err(AlignError::InvalidEntry { ref id, .. }) if id == "bad"));
    assert!(matches!(
        Reference::build([("e", "")]),
        Err(AlignError::InvalidEntry { .. })
    ));
    // Short queries and empty references give no hits, not errors.
    assert!(r.search("MK", &p).unwrap().is_empty());
    let empty = Reference::build(Vec::<(String, String)>::new()).unwrap();
    assert!(empty.search("MKVLAAGIV", &p).unwrap().is_empty());
}

#[test]
fn serialised_reference_round_trips_and_rejects_corruption() {
    let (r, entries) = reference(200, 16);
    let bytes = r.to_bytes().unwrap();
    let back = Reference::from_bytes(&bytes).unwrap();
    assert_eq!(back, r);
    let p = SearchParams::default();
    assert_eq!(
        back.search(&entries[5].1, &p).unwrap(),
        r.search(&entries[5].1, &p).unwrap()
    );
    assert!(Reference::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    // A residue code out of range (the residues are the last field).
    let mut flipped = bytes.clone();
    let at = flipped.len() - 10;
    flipped[at] = 0x7f;
    assert!(Reference::from_bytes(&flipped).is_err());
    assert!(Reference::from_bytes(b"not an index").is_err());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.bin");
    r.save(&path).unwrap();
    assert_eq!(Reference::load(&path).unwrap(), r);
}

#[test]
fn search_is_thread_safe() {
    let (r, entries) = reference(300, 17);
    let p = SearchParams::default();
    let expected: Vec<_> = entries
        .iter()
        .take(8)
        .map(|(_, s)| r.search(s, &p).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (i, (_, seq)) in entries.iter().take(8).enumerate() {
            let (r, p, expected) = (&r, &p, &expected);
            s.spawn(move || assert_eq!(&r.search(seq, p).unwrap(), &expected[i]));
        }
    });
}
