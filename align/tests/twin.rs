//! The SIMD kernel, the crate's scalar twin and a naive textbook implementation agree exactly.

mod common;

use common::{naive_sw, Rng, STANDARD};
use plm_align::alphabet::encode;
use plm_align::{align_pair, local_alignment_scalar, local_score_scalar, QueryProfile, GAPS};
use proptest::prelude::*;

fn check(q: &str, t: &str) {
    let (qc, tc) = (encode(q).unwrap(), encode(t).unwrap());
    let expected = naive_sw(q, t);
    let scalar = local_score_scalar(&qc, &tc, GAPS);
    let simd = QueryProfile::new(&qc).local_score(&tc, GAPS);
    assert_eq!(scalar.score, expected, "scalar vs naive\n{q}\n{t}");
    assert_eq!(simd, scalar, "simd vs scalar\n{q}\n{t}");
    let full = local_alignment_scalar(&qc, &tc, GAPS);
    assert_eq!(full.score, expected);
    let a = align_pair(q, t).unwrap();
    assert_eq!(a.score, expected, "traceback score\n{q}\n{t}");
    if expected > 0 {
        assert_eq!(
            (a.query_end - 1, a.target_end - 1),
            (scalar.query_end, scalar.target_end)
        );
        assert!(a.identities <= a.pairs.len() && a.pairs.len() <= a.columns);
    }
}

#[test]
fn hand_computed_scores() {
    let all = "ACDEFGHIKLMNPQRSTVWY";
    assert_eq!(naive_sw(all, all), 116);
    check(all, all);
    // Ten W against two runs of five W split by GG: one gap of length 2 costs 13.
    assert_eq!(naive_sw("WWWWWWWWWW", "WWWWWGGWWWWW"), 97);
    check("WWWWWWWWWW", "WWWWWGGWWWWW");
    check("A", "W");
    check("W", "W");
    check("HEAGAWGHEE", "PAWHEAE");
}

#[test]
fn identical_sequences_align_fully() {
    let mut rng = Rng(7);
    for len in [1, 15, 16, 17, 100, 333, 1200] {
        let s = rng.protein(len);
        let a = align_pair(&s, &s).unwrap();
        assert_eq!(
            (a.query_start, a.query_end, a.target_start, a.target_end),
            (0, len, 0, len)
        );
        assert_eq!(a.identities, len);
        assert_eq!(a.columns, len);
        assert_eq!(a.pairs.len(), len);
        assert!(a.pairs.iter().all(|&(i, j)| i == j));
    }
}

#[test]
fn long_identical_sequences_fall_back_when_i16_saturates() {
    let s = "W".repeat(3500); // 38,500 > i16::MAX
    let c = encode(&s).unwrap();
    let simd = QueryProfile::new(&c).local_score(&c, GAPS);
    assert_eq!(simd.score, 11 * 3500);
    assert_eq!(simd, local_score_scalar(&c, &c, GAPS));
}

fn protein(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0..STANDARD.len() + 1, 1..max).prop_map(|v| {
        v.into_iter()
            .map(|i| if i == 20 { 'X' } else { STANDARD[i] as char })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_pairs_agree(q in protein(200), t in protein(200)) {
        check(&q, &t);
    }

    #[test]
    fn related_pairs_agree(seed in any::<u64>(), len in 1usize..400, rate in 0.0f64..0.6) {
        let mut rng = Rng(seed | 1);
        let q = rng.protein(len);
        let t = rng.mutate(&q, rate);
        check(&q, &t);
    }

    #[test]
    fn low_complexity_pairs_agree(q in "[AGW]{1,120}", t in "[AGW]{1,120}") {
        check(&q, &t);
    }
}
