//! Template transfer, the binding GNN and their per-residue blend on the binding-site test
//! sets (`plm_binding_sites`' methods), per ligand, against the MMseqs2 nearest-neighbour
//! template (the best hit annotated for the ligand, its labels carried through the alignment):
//! - *held-out chains*: each ligand's test file (GPSite, GraphPPIS Test_60), none of which the
//!   GNN saw; reference = every training file (the shipped reference set);
//! - *random split*: each test file split in three at random: a third joins the reference, a
//!   third fits the blend, a third is tested.
//!
//! Each ligand's blend is fitted on the random split's validation chains and applied to both.

use std::collections::HashMap;

use anyhow::Result;
use plm_model::heads::{binding_blend_key, LIGANDS};
use plm_model::homology::{BindingReference, Blend, Evidence};
use plm_model::predict::{model_binding_scores, ContactSource};
use plm_model::tokenizer::clean_sequence;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::binary::{fit, report, Scored};
use super::{Evaluator, HomologyArgs, SHARPNESS};
use crate::finetune::binding::label_files;
use crate::finetune::features::progress;
use crate::reference::BindingSet;
use crate::taskdata::{self, ResidueLabels};

impl Evaluator {
    /// The GNN's per-residue probabilities of every ligand for `sequence` (cached).
    fn binding_model(&mut self, sequence: &str) -> Result<&HashMap<String, Vec<f32>>> {
        if !self.binding_cache.contains_key(sequence) {
            let scores = model_binding_scores(
                &self.engine,
                Some(&self.heads),
                sequence,
                ContactSource::Predicted,
            )?;
            self.binding_cache
                .insert(sequence.to_string(), scores.into_iter().collect());
        }
        Ok(&self.binding_cache[sequence])
    }

    /// The GNN's and template transfer's scores of `ligand` on the residues of `chains`.
    fn score_chains(
        &mut self,
        ligand: usize,
        chains: &[ResidueLabels],
        reference: &BindingReference,
    ) -> Result<Scored> {
        let mut out = Scored::new(Evidence::ForAndAgainst);
        let name = LIGANDS[ligand];
        let bar = progress(chains.len(), &format!("binding {name}"));
        for chain in chains {
            let model = self.binding_model(&chain.sequence)?;
            out.model.extend(
                model
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| vec![0.0; chain.sequence.len()]),
            );
            out.labels.extend(&chain.labels);
            let hits = reference.search(&chain.sequence)?;
            for (k, &s) in SHARPNESS.iter().enumerate() {
                let mut t = reference.transfer(chain.sequence.len(), &hits, s);
                out.homology[k].extend(std::mem::take(&mut t.scores[ligand]));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// The MMseqs2 nearest neighbour: labels of the best hit among the reference chains annotated
/// for `ligand`, carried through the alignment and scored by the hit's identity.
fn nearest_neighbour(
    args: &HomologyArgs,
    name: &str,
    ligand: usize,
    chains: &[ResidueLabels],
    set: &BindingSet,
) -> Result<Vec<f32>> {
    let annotated: Vec<(String, String, Vec<u32>)> = set
        .chains()
        .iter()
        .filter_map(|(id, s, l)| {
            Some((
                id.clone(),
                s.clone(),
                l.get(&(ligand as u16))?.iter().copied().collect(),
            ))
        })
        .collect();
    let targets: Vec<(String, String)> = annotated
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), c.1.clone()))
        .collect();
    let queries: Vec<(String, String)> = chains
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), c.sequence.clone()))
        .collect();
    let hits = taskdata::mmseqs_best_alignments(
        &queries,
        &targets,
        &args
            .work
            .join(format!("binding-{name}-{}", LIGANDS[ligand])),
    )?;
    let mut out = Vec::new();
    for (i, chain) in chains.iter().enumerate() {
        let mut scores = vec![0f32; chain.sequence.len()];
        if let Some(hit) = hits.get(&i.to_string()) {
            if let Some(target) = hit
                .target
                .parse::<usize>()
                .ok()
                .and_then(|t| annotated.get(t))
            {
                for &(q, t) in &hit.pairs {
                    if target.2.binary_search(&t).is_ok() {
                        if let Some(s) = scores.get_mut(q as usize) {
                            *s = hit.identity;
                        }
                    }
                }
            }
        }
        out.extend(scores);
    }
    Ok(out)
}

/// Evaluates binding-site prediction and returns the figures and the fitted blend per ligand
/// (`binding_<ligand>`).
pub fn evaluate(
    args: &HomologyArgs,
    eval: &mut Evaluator,
) -> Result<(Value, Vec<(String, Blend)>)> {
    let mut train = BindingSet::default();
    let mut tests = Vec::new();
    for (k, ligand) in LIGANDS.iter().enumerate() {
        let (train_file, test_file) = label_files(ligand);
        for chain in taskdata::read_residue_labels(&args.data.join(train_file))? {
            train.add(&chain, k);
        }
        let mut test: Vec<ResidueLabels> =
            taskdata::read_residue_labels(&args.data.join(test_file))?
                .into_iter()
                .filter_map(|mut c| {
                    // As the server reads it; chains whose cleaning changes their length are left out.
                    c.sequence = clean_sequence(&c.sequence).ok()?;
                    (c.sequence.len() == c.labels.len()
                        && c.sequence.len() <= args.max_binding_length)
                        .then_some(c)
                })
                .collect();
        test.shuffle(&mut rand::rngs::StdRng::seed_from_u64(args.seed));
        tests.push(test);
    }
    // Random split: a third of each test file joins the reference.
    let mut random = train.clone();
    let thirds: Vec<[&[ResidueLabels]; 3]> = tests
        .iter()
        .map(|t| {
            let n = t.len() / 3;
            [&t[..n], &t[n..2 * n], &t[2 * n..]]
        })
        .collect();
    for (k, [to_reference, _, _]) in thirds.iter().enumerate() {
        for chain in *to_reference {
            random.add(chain, k);
        }
    }
    let held_out_ref = train.build("evaluation")?;
    let random_ref = random.build("evaluation")?;
    let mut out = json!({});
    let mut blends = Vec::new();
    for (k, ligand) in LIGANDS.iter().enumerate() {
        let [_, validation, test] = thirds[k];
        let val = eval.score_chains(k, validation, &random_ref)?;
        let (blend, by_alpha) = fit(&val, &[Evidence::ForAndAgainst]);
        let mut entry = json!({
            "blend": blend,
            "blend_from": format!("{} validation chains of the random split (AUROC over residues)", validation.len()),
            "validation_by_sharpness": by_alpha,
        });
        for (name, description, chains, set, reference) in [
            ("held_out_chains", format!("all {} chains of the test file (up to {} residues); reference = every training file", tests[k].len(), args.max_binding_length), &tests[k][..], &train, &held_out_ref),
            ("random_split", format!("{} test chains (a third of the test file, seed {}); reference = every training file and another third of the test file", test.len(), args.seed), test, &random, &random_ref),
        ] {
            let scored = eval.score_chains(k, chains, reference)?;
            let nn = nearest_neighbour(args, name, k, chains, set)?;
            let mut v = report(&scored, blend, &nn);
            v["description"] = json!(description);
            v["chains"] = json!(chains.len());
            println!("binding {ligand} {name}: {}", super::binary_summary(&v));
            entry[name] = v;
        }
        out[*ligand] = entry;
        blends.push((binding_blend_key(ligand), blend));
    }
    Ok((out, blends))
}
