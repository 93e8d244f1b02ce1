//! Interolog transfer, the pair head and their blend on the interaction sets (`plm_ppi`'s
//! methods), against the MMseqs2 nearest-neighbour interolog baseline:
//! - *unseen proteins*: the pair head's own D-SCRIPT yeast test pairs (both proteins outside
//!   its training part); reference = the head's training pairs;
//! - *random split*: pairs drawn at random from those the head was not trained on (at least one
//!   protein unseen by the head); reference = every other D-SCRIPT pair;
//! - *cross-species*: MCAPS fly and human pairs against a yeast reference (D-SCRIPT and Guo).
//!
//! The blend is fitted on validation pairs of the random split and of each cross-species set
//! (pairs not among its test pairs) together, and applied to every set.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use plm_model::homology::{Blend, Evidence, InteractionReference};
use plm_model::predict::{interolog_scores, pair_hits, pooled_features, ppi_head_scores};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::binary::{fit, report, Scored};
use super::{head_settings, Evaluator, HomologyArgs, SHARPNESS};
use crate::finetune::features::progress;
use crate::finetune::ppi::YeastSplit;
use crate::reference::{read_interactions, PairSet};
use crate::taskdata;

/// A labelled pair of sequences.
type Pair = (String, String, bool);

impl Evaluator {
    /// Pooled features of each sequence, as the served pair head sees them (cached).
    fn pooled(&mut self, sequences: &[&String]) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<&str> = sequences
            .iter()
            .filter(|s| !self.pooled_cache.contains_key(s.as_str()))
            .map(|s| s.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let bar = progress(missing.len(), "interaction: features");
        for chunk in missing.chunks(32) {
            let f = pooled_features(&self.engine, &self.heads, chunk)?;
            for (s, f) in chunk.iter().zip(f) {
                self.pooled_cache.insert(s.to_string(), f);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(sequences
            .iter()
            .map(|s| self.pooled_cache[s.as_str()].clone())
            .collect())
    }

    /// The pair head's and interolog transfer's scores of `pairs`.
    fn score_pairs(&mut self, pairs: &[Pair], reference: &InteractionReference) -> Result<Scored> {
        let a: Vec<&String> = pairs.iter().map(|p| &p.0).collect();
        let b: Vec<&String> = pairs.iter().map(|p| &p.1).collect();
        let (fa, fb) = (self.pooled(&a)?, self.pooled(&b)?);
        let mut out = Scored {
            labels: pairs.iter().map(|p| p.2).collect(),
            ..Scored::new(Evidence::OnlyFor)
        };
        for (x, y) in fa.chunks(512).zip(fb.chunks(512)) {
            out.model.extend(ppi_head_scores(&self.heads, x, y)?);
        }
        let as_str: Vec<(&str, &str)> =
            pairs.iter().map(|p| (p.0.as_str(), p.1.as_str())).collect();
        // Each protein is searched once; the hits are scored at every sharpness.
        let hits = pair_hits(reference, &as_str)?;
        for (k, &s) in SHARPNESS.iter().enumerate() {
            out.homology[k] = interolog_scores(reference, &as_str, &hits, s);
        }
        Ok(out)
    }
}

/// The MMseqs2 nearest-neighbour interolog: the best hit of each protein, and the product of
/// the two identities where those hits are a known interacting pair (else 0).
fn nearest_neighbour(
    args: &HomologyArgs,
    name: &str,
    pairs: &[Pair],
    reference: &PairSet,
) -> Result<Vec<f32>> {
    let mut ids: HashMap<&str, String> = HashMap::new();
    for p in pairs {
        for s in [&p.0, &p.1] {
            let n = ids.len();
            ids.entry(s.as_str()).or_insert_with(|| format!("q{n}"));
        }
    }
    let queries: Vec<(String, String)> = ids
        .iter()
        .map(|(s, id)| (id.clone(), s.to_string()))
        .collect();
    let targets: Vec<(String, String)> = reference
        .proteins()
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (i.to_string(), s.clone()))
        .collect();
    let hits =
        taskdata::mmseqs_best_hits(&queries, &targets, &args.work.join(format!("ppi-{name}")))?;
    let known: HashSet<(u32, u32)> = reference
        .pairs()
        .iter()
        .flat_map(|&(a, b)| [(a, b), (b, a)])
        .collect();
    let best = |s: &str| -> Option<(u32, f32)> {
        let (t, i) = hits.get(&ids[s])?;
        Some((t.parse().ok()?, *i))
    };
    Ok(pairs
        .iter()
        .map(|p| match (best(&p.0), best(&p.1)) {
            (Some((a, ia)), Some((b, ib))) if known.contains(&(a, b)) => ia * ib,
            _ => 0.0,
        })
        .collect())
}

fn pair_set(pairs: &[Pair]) -> PairSet {
    let mut set = PairSet::default();
    for (k, (a, b, positive)) in pairs.iter().enumerate() {
        if *positive {
            set.add(&format!("a{k}"), a, &format!("b{k}"), b);
        }
    }
    set
}

/// Evaluates interaction prediction and returns the figures and the fitted blend.
pub fn evaluate(args: &HomologyArgs, eval: &mut Evaluator) -> Result<(Value, Blend)> {
    let (_, seed) = head_settings(&eval.heads.config.metrics, "ppi")?;
    // The head's own split, recomputed as finetune made it.
    let yeast = YeastSplit::read(&args.data, seed)?;
    let (seqs, pairs) = (&yeast.sequences, &yeast.pairs);
    let as_pair = |&(a, b, l): &(usize, usize, bool)| (seqs[a].clone(), seqs[b].clone(), l);
    let trained = |p: &(usize, usize, bool)| yeast.trains(p);
    let train: Vec<Pair> = pairs.iter().filter(|p| trained(p)).map(as_pair).collect();
    let unseen: Vec<Pair> = pairs
        .iter()
        .filter(|p| yeast.unseen(p))
        .map(as_pair)
        .collect();
    let mut pool: Vec<usize> = (0..pairs.len()).filter(|&i| !trained(&pairs[i])).collect();
    pool.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
    let n_val = args.validation_pairs.min(pool.len() / 2);
    let n_test = args.test_pairs.min(pool.len() - n_val);
    let held: HashSet<usize> = pool[..n_val + n_test].iter().copied().collect();
    let validation: Vec<Pair> = pool[..n_val].iter().map(|&i| as_pair(&pairs[i])).collect();
    let random_test: Vec<Pair> = pool[n_val..n_val + n_test]
        .iter()
        .map(|&i| as_pair(&pairs[i]))
        .collect();
    let random_reference: Vec<Pair> = (0..pairs.len())
        .filter(|i| !held.contains(i))
        .map(|i| as_pair(&pairs[i]))
        .collect();

    let yeast = PairSet::positives_of(
        &args.data,
        &[
            ("dscript_yeast_pairs.tsv", "dscript_yeast.fasta"),
            ("guo_yeast_pairs.tsv", "guo_yeast_sequences.tsv"),
        ],
    )?;
    let yeast_ref = yeast.build("evaluation")?;
    // Each cross-species set: test pairs, then validation pairs, drawn at random.
    let mut species_sets = Vec::new();
    for species in ["fly", "human"] {
        let mut all: Vec<Pair> = read_interactions(
            &args.data,
            &format!("mcaps_{species}_pairs.tsv"),
            &format!("mcaps_{species}.fasta"),
        )?
        .into_iter()
        .map(|p| (p.a.1, p.b.1, p.positive))
        .collect();
        all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
        let n_test = args.cross_species_pairs.min(all.len() / 2);
        let rest = all.split_off(n_test);
        let n_val = (args.validation_pairs / 2).min(rest.len());
        species_sets.push((species, all, rest[..n_val].to_vec()));
    }

    let random_set = pair_set(&random_reference);
    let random_ref = random_set.build("evaluation")?;
    let mut val = eval.score_pairs(&validation, &random_ref)?;
    for (_, _, species_validation) in &species_sets {
        val.append(eval.score_pairs(species_validation, &yeast_ref)?);
    }
    let (blend, by_alpha) = fit(&val, &[Evidence::OnlyFor, Evidence::ForAndAgainst]);
    println!("ppi: fitted {blend:?}");
    let n_species_val: usize = species_sets.iter().map(|s| s.2.len()).sum();

    let mut out = json!({
        "blend": blend,
        "blend_from": format!("{n_val} validation pairs of the random split and {n_species_val} of the cross-species sets (AUROC)"),
        "validation_by_sharpness": by_alpha,
    });
    let mut run = |name: &str, description: String, test: &[Pair], set: &PairSet| -> Result<()> {
        let reference = set.build("evaluation")?;
        let scored = eval.score_pairs(test, &reference)?;
        let nn = nearest_neighbour(args, name, test, set)?;
        let mut v = report(&scored, blend, &nn);
        v["description"] = json!(description);
        v["reference_pairs"] = json!(reference.pair_count());
        println!("ppi {name}: {}", super::binary_summary(&v));
        out[name] = v;
        Ok(())
    };
    run(
        "unseen_proteins",
        format!("the pair head's D-SCRIPT yeast test pairs (proteins split 80/20, seed {seed}; both proteins outside its training part); reference = its training pairs"),
        &unseen,
        &pair_set(&train),
    )?;
    run(
        "random_split",
        format!("{n_test} D-SCRIPT yeast pairs drawn at random (seed {}) from those the head was not trained on; reference = every D-SCRIPT pair but the {n_val} validation and {n_test} test pairs", args.seed),
        &random_test,
        &random_set,
    )?;
    for (species, test, _) in &species_sets {
        run(
            &format!("cross_species_{species}"),
            format!("{} MCAPS {species} pairs drawn at random (seed {}); reference = the yeast pairs (D-SCRIPT and Guo)", test.len(), args.seed),
            test,
            &yeast,
        )?;
    }
    Ok((out, blend))
}
