//! Task predictions from a language model and its task heads: function terms, interaction
//! probabilities and per-residue binding sites.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};

use crate::engine::{Engine, Matrix};
use crate::error::{PlmError, Result};
use crate::gnn::EdgeIndex;
use crate::graph::{GraphBatch, ResidueGraph};
use crate::heads::{propagate_up, sigmoid, TaskHeads, LIGANDS, ONTOLOGIES};
use crate::homology::{
    self, combine_score, BindingReference, Blend, Evidence, FunctionReference,
    InteractionReference, Method,
};
use crate::structure::{map_to_sequence, parse_structure};
use crate::surface::ChainGeometry;

/// One predicted function term.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionPrediction {
    /// EC number or GO identifier.
    pub term: String,
    /// Term name (empty when unknown).
    pub name: String,
    /// Probability-like score in [0, 1].
    pub score: f32,
    /// What supports the term: `model`, `homology` or `model+homology`.
    pub evidence: String,
    /// Accession of the most similar annotated protein carrying the term (homology).
    pub template: Option<String>,
    /// Sequence identity of that protein's alignment to the query, in [0, 1].
    pub template_identity: Option<f32>,
}

/// One predicted binding residue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BindingPrediction {
    /// 1-based residue position.
    pub position: usize,
    /// One-letter residue code.
    pub residue: char,
    /// Ligand type.
    pub ligand: String,
    /// Probability-like score in [0, 1].
    pub score: f32,
}

/// Where the contacts of a residue graph come from.
#[derive(Debug, Clone, Copy)]
pub enum ContactSource<'a> {
    /// The language model's contact head.
    Predicted,
    /// A PDB or mmCIF text, optionally with the chain to use.
    Structure {
        /// The structure text.
        text: &'a str,
        /// Chain identifier; `None` takes the first protein chain.
        chain: Option<&'a str>,
    },
    /// C-alpha geometry already mapped to the sequence (evaluation on contact files).
    Geometry(&'a ChainGeometry),
}

fn missing_head(engine: &Engine, head: &str) -> PlmError {
    PlmError::MissingHead {
        model: engine.name().to_string(),
        head: head.to_string(),
    }
}

fn heads_or_err<'h>(
    engine: &Engine,
    heads: Option<&'h TaskHeads>,
    head: &str,
) -> Result<&'h TaskHeads> {
    heads.ok_or_else(|| missing_head(engine, head))
}

/// Per-residue multi-scale features of the heads' `feature_layers`.
pub fn residue_features(
    engine: &Engine,
    heads: &TaskHeads,
    sequences: &[&str],
) -> Result<Vec<Matrix>> {
    engine.embed_residues(sequences, &feature_layers(heads))
}

/// The heads' `feature_layers` as layer arguments.
fn feature_layers(heads: &TaskHeads) -> Vec<Option<i64>> {
    heads
        .config
        .feature_layers
        .iter()
        .map(|&l| Some(l))
        .collect()
}

/// Mean over the rows of a matrix.
pub fn mean_rows(m: &Matrix) -> Vec<f32> {
    let mut out = vec![0f32; m.cols];
    for r in 0..m.rows {
        for (o, v) in out.iter_mut().zip(m.row(r)) {
            *o += v;
        }
    }
    let n = m.rows.max(1) as f32;
    out.iter_mut().for_each(|v| *v /= n);
    out
}

/// Pooled multi-scale features of each sequence: the mean of [`residue_features`].
pub fn pooled_features(
    engine: &Engine,
    heads: &TaskHeads,
    sequences: &[&str],
) -> Result<Vec<Vec<f32>>> {
    Ok(residue_features(engine, heads, sequences)?
        .iter()
        .map(mean_rows)
        .collect())
}

fn rows_tensor(rows: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let cols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), cols), device)?)
}

/// Checks an ontology name.
pub fn check_ontology(ontology: &str) -> Result<String> {
    let o = ontology
        .trim()
        .to_ascii_lowercase()
        .replace(['-', ':'], "_");
    let o = match o.as_str() {
        "mf" | "bp" | "cc" => format!("go_{o}"),
        _ => o,
    };
    if ONTOLOGIES.contains(&o.as_str()) {
        Ok(o)
    } else {
        Err(PlmError::InvalidArgument(format!(
            "unknown ontology '{ontology}' (valid: {})",
            ONTOLOGIES.join(", ")
        )))
    }
}

/// Checks a ligand name (case-insensitive).
pub fn check_ligand(ligand: &str) -> Result<String> {
    let l = ligand.trim().to_ascii_uppercase();
    if LIGANDS.contains(&l.as_str()) {
        Ok(l)
    } else {
        Err(PlmError::InvalidArgument(format!(
            "unknown ligand '{ligand}' (valid: {})",
            LIGANDS.join(", ")
        )))
    }
}

/// How [`predict_function`] answers.
#[derive(Debug, Clone, Copy)]
pub struct FunctionQuery<'a> {
    /// Ontology (`ec`, `go_mf`, `go_bp`, `go_cc`).
    pub ontology: &'a str,
    /// Model, homology transfer or both.
    pub method: Method,
    /// Most terms returned.
    pub top_k: usize,
    /// Lowest score returned.
    pub min_score: f32,
}

/// Scores of every term the ontology's language-model head supports, by term.
pub fn model_function_scores(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    sequence: &str,
    ontology: &str,
) -> Result<(BTreeMap<String, f32>, BTreeMap<String, String>)> {
    let what = format!("function ({ontology})");
    let heads = heads_or_err(engine, heads, &what)?;
    let features = || pooled_features(engine, heads, &[sequence]);
    // One head per ontology: the MLP, or the neighbour bank where that measured better.
    let (mut scores, terms) = if let Some((head, config)) = heads.function_head(ontology) {
        let x = rows_tensor(&features()?, &Device::Cpu)?;
        let logits = head.forward(&x, false)?.squeeze(0)?.to_vec1::<f32>()?;
        (sigmoid(&logits), &config.terms)
    } else if let (Some(head), Some(config)) = (
        heads.neighbours.get(ontology),
        heads.config.neighbours.get(ontology),
    ) {
        let x = features()?;
        (head.scores(&x[0])?, &config.terms)
    } else {
        return Err(missing_head(engine, &what));
    };
    propagate_up(&mut scores, &terms.ancestors);
    let names = terms
        .labels
        .iter()
        .zip(&terms.names)
        .map(|(l, n)| (l.clone(), n.clone()))
        .collect();
    // A term without support (score 0: no neighbour carries it) is never listed.
    let scores = terms
        .labels
        .iter()
        .zip(scores)
        .filter(|(_, s)| *s > 0.0)
        .map(|(l, s)| (l.clone(), s))
        .collect();
    Ok((scores, names))
}

/// The `top_k` best function terms of `sequence` scoring at least `min_score`: from the
/// language-model head, from homology transfer over `reference`, or the two blended as
/// `blend` says (the model alone when nothing in `reference` is similar). Each row says
/// which evidence supports it and, for homology, the best template carrying the term.
pub fn predict_function(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    reference: Option<&FunctionReference>,
    sequence: &str,
    query: FunctionQuery<'_>,
    blend: Blend,
) -> Result<Vec<FunctionPrediction>> {
    let ontology = check_ontology(query.ontology)?;
    let (model, mut names) = match query.method {
        Method::Homology => Default::default(),
        _ => model_function_scores(engine, heads, sequence, &ontology)?,
    };
    let mut homology = BTreeMap::new();
    let mut templates = HashMap::new();
    if query.method != Method::Model {
        let reference =
            reference.ok_or_else(|| missing_reference(&format!("{ontology} function")))?;
        let clean = crate::tokenizer::clean_sequence(sequence)?;
        let transfer = reference.transfer(&reference.search(&clean)?, blend.sharpness);
        for (t, score) in transfer.scores {
            let term = reference.terms[t as usize].clone();
            names
                .entry(term.clone())
                .or_insert_with(|| reference.names[t as usize].clone());
            if let Some(e) = transfer.evidence.get(&t) {
                templates.insert(term.clone(), e.clone());
            }
            homology.insert(term, score);
        }
    }
    let scores = homology::combine(&model, &homology, query.method, blend);
    let mut rows: Vec<(String, f32)> = scores
        .into_iter()
        .filter(|(_, s)| *s >= query.min_score && *s > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(query.top_k);
    Ok(rows
        .into_iter()
        .map(|(term, score)| {
            let evidence = match (model.contains_key(&term), homology.contains_key(&term)) {
                (true, true) => "model+homology",
                (false, true) => "homology",
                _ => "model",
            };
            let template = templates.get(&term);
            FunctionPrediction {
                name: names.get(&term).cloned().unwrap_or_default(),
                score,
                evidence: evidence.into(),
                template: template.map(|t| t.0.clone()),
                template_identity: template.map(|t| t.1),
                term,
            }
        })
        .collect())
}

/// The error for a homology method without the reference set it needs.
fn missing_reference(what: &str) -> PlmError {
    PlmError::NotSupported(format!(
        "no {what} reference set is installed for homology transfer (method 'homology' or 'combined'); install models/reference (scripts/install-models.sh) or use method => 'model'"
    ))
}

/// The interaction head's probabilities of pairs of pooled feature vectors.
pub fn ppi_head_scores(heads: &TaskHeads, a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<Vec<f32>> {
    let head = heads
        .ppi
        .as_ref()
        .ok_or_else(|| PlmError::Internal("no interaction head".into()))?;
    let logits = head
        .forward(
            &rows_tensor(a, &Device::Cpu)?,
            &rows_tensor(b, &Device::Cpu)?,
            false,
        )?
        .to_vec1::<f32>()?;
    Ok(sigmoid(&logits))
}

/// The language-model head's interaction probabilities of pairs of sequences.
fn model_ppi_scores(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    pairs: &[(&str, &str)],
) -> Result<Vec<f32>> {
    let heads = heads_or_err(engine, heads, "interaction (ppi)")?;
    if heads.ppi.is_none() {
        return Err(missing_head(engine, "interaction (ppi)"));
    }
    let a: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let fa = pooled_features(engine, heads, &a)?;
    let fb = pooled_features(engine, heads, &b)?;
    ppi_head_scores(heads, &fa, &fb)
}

/// Hits in `reference` of each distinct sequence of `pairs`, each searched once.
pub fn pair_hits<'a>(
    reference: &InteractionReference,
    pairs: &[(&'a str, &'a str)],
) -> Result<HashMap<&'a str, Vec<plm_align::Hit>>> {
    let mut hits = HashMap::new();
    for &(a, b) in pairs {
        for s in [a, b] {
            if !hits.contains_key(s) {
                let clean = crate::tokenizer::clean_sequence(s)?;
                hits.insert(s, reference.search(&clean)?);
            }
        }
    }
    Ok(hits)
}

/// Interolog evidence of each pair (`None` where a protein has no homolog in `reference`),
/// from the hits found by [`pair_hits`].
pub fn interolog_scores(
    reference: &InteractionReference,
    pairs: &[(&str, &str)],
    hits: &HashMap<&str, Vec<plm_align::Hit>>,
    sharpness: f32,
) -> Vec<Option<f32>> {
    pairs
        .iter()
        .map(|(a, b)| {
            reference
                .interolog(&hits[a], &hits[b], sharpness)
                .map(|i| i.score)
        })
        .collect()
}

/// Interaction probabilities of pairs of sequences (symmetric): from the language-model pair
/// head, from interolog transfer over `reference`, or the two blended as `blend` says (a
/// noisy-OR: a known interacting pair of homologs raises the model's score, nothing lowers
/// it).
pub fn predict_ppi(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    reference: Option<&InteractionReference>,
    pairs: &[(&str, &str)],
    method: Method,
    blend: Blend,
) -> Result<Vec<f32>> {
    let model = match method {
        Method::Homology => vec![0.0; pairs.len()],
        _ => model_ppi_scores(engine, heads, pairs)?,
    };
    let homology = match method {
        Method::Model => vec![None; pairs.len()],
        _ => {
            let reference = reference.ok_or_else(|| missing_reference("interaction"))?;
            let hits = pair_hits(reference, pairs)?;
            interolog_scores(reference, pairs, &hits, blend.sharpness)
        }
    };
    Ok(model
        .into_iter()
        .zip(homology)
        .map(|(m, h)| combine_score(m, h, method, blend, Evidence::OnlyFor))
        .collect())
}

/// The C-alpha geometry of a supplied structure's chain (`chain`: `None` takes the first
/// protein chain) mapped onto `sequence`, whose features have `length` rows, with pairs up to
/// `radius` Å at least ([`ChainGeometry::from_trace`]); predicted contacts come with the
/// features from [`Engine::residues_and_contacts`] instead.
pub fn structure_geometry(
    sequence: &str,
    length: usize,
    text: &str,
    chain: Option<&str>,
    radius: f64,
) -> Result<ChainGeometry> {
    let cleaned = crate::tokenizer::clean_sequence(sequence)?;
    let trace = parse_structure(text, chain)?;
    let mapping = map_to_sequence(&cleaned, &trace)?;
    Ok(ChainGeometry::from_trace(length, &trace, &mapping, radius))
}

/// How [`predict_binding_sites`] answers.
#[derive(Debug, Clone, Copy)]
pub struct BindingQuery<'a> {
    /// One ligand type (`None`: all).
    pub ligand: Option<&'a str>,
    /// Lowest score returned.
    pub threshold: f32,
    /// Where the residue graph's contacts come from.
    pub source: ContactSource<'a>,
    /// Model, homology transfer or both.
    pub method: Method,
}

/// The binding GNN's probabilities: for each of the head's ligands (in its order), one per
/// residue.
pub fn model_binding_scores(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    sequence: &str,
    source: ContactSource,
) -> Result<Vec<(String, Vec<f32>)>> {
    let heads = heads_or_err(engine, heads, "binding-site")?;
    let (head, config) = match (&heads.binding, &heads.config.binding) {
        (Some(h), Some(c)) => (h, c),
        _ => return Err(missing_head(engine, "binding-site")),
    };
    let cutoff = config.graph.distance_cutoff;
    let structure_graph =
        |g: &ChainGeometry| ResidueGraph::from_pairs(g.length, g.contacts(cutoff), &config.graph);
    let (x, graph, geometry) = match source {
        ContactSource::Predicted => {
            // One pass for the features and the contacts.
            let (x, contacts) = engine.residues_and_contacts(sequence, &feature_layers(heads))?;
            let graph = ResidueGraph::from_contact_map(x.rows, &contacts.data, &config.graph)?;
            (x, graph, None)
        }
        ContactSource::Structure { text, chain } => {
            let x = residue_features(engine, heads, &[sequence])?.remove(0);
            let geometry = structure_geometry(sequence, x.rows, text, chain, cutoff)?;
            (x, structure_graph(&geometry)?, Some(Cow::Owned(geometry)))
        }
        ContactSource::Geometry(geometry) => {
            let x = residue_features(engine, heads, &[sequence])?.remove(0);
            if geometry.length != x.rows {
                return Err(PlmError::InvalidArgument(format!(
                    "a geometry of {} residues for a sequence of {}",
                    geometry.length, x.rows
                )));
            }
            (x, structure_graph(geometry)?, Some(Cow::Borrowed(geometry)))
        }
    };
    let x = &x;
    let edges = EdgeIndex::new(&GraphBatch::new(&[&graph]), &Device::Cpu)?;
    let input = Tensor::from_slice(&x.data, (x.rows, x.cols), &Device::Cpu)?;
    let probs: Vec<Vec<f32>> = head
        .forward(&input, &edges, false)?
        .to_vec2::<f32>()?
        .iter()
        .map(|row| sigmoid(row))
        .collect();
    let prior = geometry
        .as_ref()
        .and_then(|g| heads.config.interface_prior().map(|p| (g, p)));
    let surface = prior.map(|(g, _)| g.features()).transpose()?;
    Ok(config
        .ligands
        .iter()
        .enumerate()
        .map(|(c, l)| {
            let column: Vec<f32> = probs.iter().map(|p| p[c]).collect();
            let column = match (prior, &surface) {
                (Some((_, prior)), Some(features)) if prior.ligands.contains(l) => {
                    prior.blend(&column, features)
                }
                _ => column,
            };
            (l.clone(), column)
        })
        .collect())
}

/// Per-residue binding-site scores of `sequence` for the query's ligand (all types when
/// `None`), keeping those at or above its threshold, ordered by position then ligand (in
/// [`LIGANDS`] order): from the GNN head, from template transfer over `reference`, or their
/// per-residue blend (`blend(ligand)`), the GNN alone on residues no template covers.
pub fn predict_binding_sites(
    engine: &Engine,
    heads: Option<&TaskHeads>,
    reference: Option<&BindingReference>,
    sequence: &str,
    query: BindingQuery<'_>,
    blend: &dyn Fn(&str) -> Blend,
) -> Result<Vec<BindingPrediction>> {
    let ligand = query.ligand.map(check_ligand).transpose()?;
    let cleaned = crate::tokenizer::clean_sequence(sequence)?;
    let residues: Vec<char> = cleaned.chars().collect();
    let wanted = |l: &str| ligand.as_deref().is_none_or(|x| x == l);
    let model = match query.method {
        Method::Homology => Vec::new(),
        _ => model_binding_scores(engine, heads, sequence, query.source)?,
    };
    if let (Some(l), Method::Model | Method::Combined) = (&ligand, query.method) {
        if !model.iter().any(|(x, _)| x == l) {
            return Err(missing_head(engine, &format!("binding-site ({l})")));
        }
    }
    let mut homology: HashMap<String, Vec<Option<f32>>> = HashMap::new();
    if query.method != Method::Model {
        let reference = reference.ok_or_else(|| missing_reference("binding-site"))?;
        let hits = reference.search(&cleaned)?;
        // Transfers by hit sharpness (ligands' blends may differ).
        let mut transfers: HashMap<u32, Vec<Vec<Option<f32>>>> = HashMap::new();
        for (k, l) in reference.ligands.iter().enumerate() {
            if wanted(l) {
                let sharpness = blend(l).sharpness;
                let scores = transfers
                    .entry(sharpness.to_bits())
                    .or_insert_with(|| reference.transfer(residues.len(), &hits, sharpness).scores);
                homology.insert(l.clone(), std::mem::take(&mut scores[k]));
            }
        }
    }
    let mut columns: Vec<(String, Vec<f32>)> = Vec::new();
    for l in LIGANDS.iter().filter(|l| wanted(l)) {
        let m = model.iter().find(|(x, _)| x == l).map(|(_, v)| v);
        let h = homology.get(*l);
        if m.is_none() && (query.method != Method::Homology || h.is_none()) {
            continue;
        }
        let b = blend(l);
        let scores = (0..residues.len())
            .map(|i| {
                let mi = m.and_then(|v| v.get(i)).copied().unwrap_or(0.0);
                let hi = h.and_then(|v| v.get(i)).copied().flatten();
                combine_score(mi, hi, query.method, b, Evidence::ForAndAgainst)
            })
            .collect();
        columns.push((l.to_string(), scores));
    }
    let mut out = Vec::new();
    for (i, &residue) in residues.iter().enumerate() {
        for (l, scores) in &columns {
            if scores[i] >= query.threshold {
                out.push(BindingPrediction {
                    position: i + 1,
                    residue,
                    ligand: l.clone(),
                    score: scores[i],
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ontology_and_ligand_names() {
        assert_eq!(check_ontology("EC").unwrap(), "ec");
        assert_eq!(check_ontology("mf").unwrap(), "go_mf");
        assert_eq!(check_ontology("GO:BP").unwrap(), "go_bp");
        let e = check_ontology("kegg").unwrap_err().to_string();
        assert!(e.contains("ec, go_mf, go_bp, go_cc"), "{e}");
        assert_eq!(check_ligand("zn").unwrap(), "ZN");
        let e = check_ligand("FE").unwrap_err().to_string();
        assert!(e.contains("DNA, RNA"), "{e}");
    }

    #[test]
    fn mean_of_rows() {
        let m = Matrix {
            rows: 2,
            cols: 2,
            data: vec![1.0, 2.0, 3.0, 6.0],
        };
        assert_eq!(mean_rows(&m), vec![2.0, 4.0]);
    }
}
