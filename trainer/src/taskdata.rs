//! Readers for the task data sets of `../shared/data` (see its README): EC and GO labels, the
//! Gene Ontology graph, interaction pairs, per-residue binding labels and contact lists.
//! Every error names the file and the line.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use plm_model::surface::CaPair;

/// A protein with a set of labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledProtein {
    /// Accession.
    pub id: String,
    /// Amino acids.
    pub sequence: String,
    /// Term identifiers.
    pub labels: Vec<String>,
}

/// A protein with one 0/1 label per residue.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidueLabels {
    /// Identifier, e.g. `1n6j_A`.
    pub id: String,
    /// Amino acids.
    pub sequence: String,
    /// One flag per residue.
    pub labels: Vec<bool>,
}

fn open_lines(path: &Path) -> Result<Box<dyn Iterator<Item = (usize, std::io::Result<String>)>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    Ok(Box::new(
        reader.lines().enumerate().map(|(i, l)| (i + 1, l)),
    ))
}

/// Tab-separated rows of a file (`.gz` allowed), skipping `header_lines` lines and blank lines;
/// each row must have at least `min_columns` fields.
pub fn read_tsv(path: &Path, header_lines: usize, min_columns: usize) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for (number, line) in open_lines(path)? {
        let line = line.with_context(|| format!("{}:{number}: unreadable line", path.display()))?;
        if number <= header_lines || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<String> = line.split('\t').map(|f| f.trim().to_string()).collect();
        if fields.len() < min_columns {
            bail!(
                "{}:{number}: expected at least {min_columns} tab-separated columns, found {}",
                path.display(),
                fields.len()
            );
        }
        rows.push(fields);
    }
    Ok(rows)
}

/// Rows of `accession`, labels separated by `separator`, `sequence` (one header line).
fn read_labeled(path: &Path, separator: char) -> Result<Vec<LabeledProtein>> {
    Ok(read_tsv(path, 1, 3)?
        .into_iter()
        .map(|r| LabeledProtein {
            id: r[0].clone(),
            labels: r[1]
                .split(separator)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            sequence: r[2].clone(),
        })
        .collect())
}

/// EC data (`Entry`, `EC number` `;`-separated, `Sequence`).
pub fn read_ec(path: &Path) -> Result<Vec<LabeledProtein>> {
    read_labeled(path, ';')
}

/// GO data (`accession`, `go_terms` comma-separated, `sequence`).
pub fn read_go(path: &Path) -> Result<Vec<LabeledProtein>> {
    read_labeled(path, ',')
}

/// The roots of the three GO namespaces.
pub const GO_ROOTS: [&str; 3] = ["GO:0008150", "GO:0003674", "GO:0005575"];

/// The Gene Ontology: `is_a`/`part_of` parents and term names.
#[derive(Debug, Clone, Default)]
pub struct GoGraph {
    parents: HashMap<String, Vec<String>>,
    names: HashMap<String, String>,
}

impl GoGraph {
    /// Reads `go_graph.tsv` (one edge per row: two term columns, then weight and relation)
    /// and `go_names.tsv` (id, name).
    ///
    /// Which term column is the parent is decided from the data: the three namespace roots
    /// (`biological_process`, `molecular_function`, `cellular_component`) have no parents, so
    /// the column they appear in is the parent column. (The shared data's README documents
    /// (child, parent), but its file is (parent, child): e.g. `GO:0048308 organelle
    /// inheritance` → `GO:0000001 mitochondrion inheritance`. Trusting the README propagated
    /// annotations *down* to every descendant.)
    pub fn read(graph: &Path, names: &Path) -> Result<Self> {
        let rows = read_tsv(graph, 0, 2)?;
        let roots_in = |column: usize| {
            rows.iter()
                .filter(|r| GO_ROOTS.contains(&r[column].as_str()))
                .count()
        };
        let (child, parent) = if roots_in(0) > roots_in(1) {
            (1, 0)
        } else {
            (0, 1)
        };
        let mut parents: HashMap<String, Vec<String>> = HashMap::new();
        for r in rows {
            parents
                .entry(r[child].clone())
                .or_default()
                .push(r[parent].clone());
        }
        let names = read_tsv(names, 0, 2)?
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        Ok(Self { parents, names })
    }

    /// Builds a graph from edges, for tests.
    pub fn from_edges(edges: &[(&str, &str)]) -> Self {
        let mut g = Self::default();
        for (c, p) in edges {
            g.parents
                .entry(c.to_string())
                .or_default()
                .push(p.to_string());
        }
        g
    }

    /// The term's name, or an empty string.
    pub fn name(&self, term: &str) -> String {
        self.names.get(term).cloned().unwrap_or_default()
    }

    /// The term and all its ancestors.
    pub fn with_ancestors(&self, term: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![term.to_string()];
        while let Some(t) = stack.pop() {
            if seen.insert(t.clone()) {
                if let Some(ps) = self.parents.get(&t) {
                    stack.extend(ps.iter().cloned());
                }
            }
        }
        seen
    }

    /// Annotations closed under the ancestor relation (the true-path rule).
    pub fn propagate(&self, terms: &[String]) -> BTreeSet<String> {
        terms.iter().flat_map(|t| self.with_ancestors(t)).collect()
    }
}

/// Interaction pairs (`id_a`, `id_b`, label as 1/0 or 1.0/0.0).
pub fn read_pairs(path: &Path) -> Result<Vec<(String, String, bool)>> {
    read_tsv(path, 0, 3)?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let v: f32 = r[2].parse().with_context(|| {
                format!(
                    "{}: row {}: label '{}' is not a number",
                    path.display(),
                    i + 1,
                    r[2]
                )
            })?;
            Ok((r[0].clone(), r[1].clone(), v >= 0.5))
        })
        .collect()
}

/// Sequences by identifier from a FASTA file (first word of the header) or a two-column TSV.
pub fn read_sequences(path: &Path) -> Result<HashMap<String, String>> {
    let is_fasta = path
        .to_string_lossy()
        .trim_end_matches(".gz")
        .ends_with(".fasta")
        || path
            .to_string_lossy()
            .trim_end_matches(".gz")
            .ends_with(".fa");
    if is_fasta {
        // Published task files contain the odd broken record (MCAPS' fly file starts
        // without a header): skip those, say how many, and let pair readers report
        // the pairs that lose a sequence.
        let mut reader = crate::data::FastaReader::open(path, true)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut sequences = HashMap::new();
        while let Some(r) = reader
            .next_record()
            .with_context(|| format!("reading {}", path.display()))?
        {
            sequences.insert(r.id, r.sequence);
        }
        if reader.skipped() > 0 {
            eprintln!(
                "warning: {}: skipped {} malformed record(s)",
                path.display(),
                reader.skipped()
            );
        }
        Ok(sequences)
    } else {
        Ok(read_tsv(path, 0, 2)?
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect())
    }
}

/// The three-line per-residue label format of GPSite and GraphPPIS: `>id`, sequence, 0/1 string.
pub fn read_residue_labels(path: &Path) -> Result<Vec<ResidueLabels>> {
    let mut lines = Vec::new();
    for (number, line) in open_lines(path)? {
        let line = line.with_context(|| format!("{}:{number}: unreadable line", path.display()))?;
        if !line.trim().is_empty() {
            lines.push((number, line.trim().to_string()));
        }
    }
    if lines.len() % 3 != 0 {
        bail!(
            "{}: {} non-empty lines is not a multiple of three (>id, sequence, labels)",
            path.display(),
            lines.len()
        );
    }
    lines
        .chunks(3)
        .map(|c| {
            let (n, header) = &c[0];
            let id = header
                .strip_prefix('>')
                .with_context(|| format!("{}:{n}: expected a '>' header", path.display()))?
                .to_string();
            let sequence = c[1].1.clone();
            let labels: Vec<bool> = c[2]
                .1
                .chars()
                .map(|ch| match ch {
                    '1' => Ok(true),
                    '0' => Ok(false),
                    other => bail!(
                        "{}:{}: label '{other}' is not 0 or 1",
                        path.display(),
                        c[2].0
                    ),
                })
                .collect::<Result<_>>()?;
            if labels.len() != sequence.len() {
                bail!(
                    "{}:{}: {} labels for a sequence of {} residues ({id})",
                    path.display(),
                    c[2].0,
                    labels.len(),
                    sequence.len()
                );
            }
            Ok(ResidueLabels {
                id,
                sequence,
                labels,
            })
        })
        .collect()
}

/// Residue contact lists by chain from a `chain, i, j, distance` TSV (`.gz` allowed), keeping
/// pairs closer than `cutoff` Å.
pub fn read_contacts(path: &Path, cutoff: f32) -> Result<HashMap<String, Vec<(usize, usize)>>> {
    Ok(read_ca_pairs(path)?
        .into_iter()
        .map(|(chain, pairs)| {
            let close = pairs
                .into_iter()
                .filter(|&(_, _, d)| d < cutoff)
                .map(|(i, j, _)| (i, j))
                .collect();
            (chain, close)
        })
        .collect())
}

/// C-alpha pairs `(i, j, distance)` by chain from a `chain, i, j, distance` TSV (`.gz`
/// allowed).
pub fn read_ca_pairs(path: &Path) -> Result<HashMap<String, Vec<CaPair>>> {
    let mut out: HashMap<String, Vec<CaPair>> = HashMap::new();
    for (k, r) in read_tsv(path, 1, 4)?.into_iter().enumerate() {
        let parse = |s: &str| -> Result<f32> {
            s.parse().with_context(|| {
                format!("{}: row {}: '{s}' is not a number", path.display(), k + 2)
            })
        };
        let (i, j, d) = (
            parse(&r[1])? as usize,
            parse(&r[2])? as usize,
            parse(&r[3])?,
        );
        out.entry(r[0].clone()).or_default().push((i, j, d));
    }
    Ok(out)
}

/// Deterministic subset of at most `n` items (seeded shuffle, then the first `n`).
pub fn seeded_subset<T: Clone>(items: &[T], n: usize, seed: u64) -> Vec<T> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    idx.truncate(n);
    idx.sort_unstable();
    idx.into_iter().map(|i| items[i].clone()).collect()
}

/// Splits identifiers into train and test by clusters: whole clusters go to the test set (in a
/// seeded order) until it holds `test_fraction` of the items.
pub fn cluster_split(
    clusters: &HashMap<String, String>,
    ids: &[String],
    test_fraction: f64,
    seed: u64,
) -> (HashSet<String>, HashSet<String>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut members: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for id in ids {
        let c = clusters.get(id).cloned().unwrap_or_else(|| id.clone());
        members.entry(c).or_default().push(id.clone());
    }
    let mut keys: Vec<String> = members.keys().cloned().collect();
    keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let target = (ids.len() as f64 * test_fraction).round() as usize;
    let (mut train, mut test) = (HashSet::new(), HashSet::new());
    for k in keys {
        let into_test = test.len() < target;
        for id in &members[&k] {
            if into_test {
                test.insert(id.clone());
            } else {
                train.insert(id.clone());
            }
        }
    }
    (train, test)
}

/// Runs `mmseqs SUBCOMMAND FILES... OPTIONS...` quietly on two threads.
fn run_mmseqs(subcommand: &str, files: &[&std::ffi::OsStr], options: &[&str]) -> Result<()> {
    let status = std::process::Command::new("mmseqs")
        .arg(subcommand)
        .args(files)
        .args(options)
        .args(["-v", "1", "--threads", "2"])
        .status()
        .context("running mmseqs (install the Debian package mmseqs2)")?;
    if !status.success() {
        bail!("mmseqs {subcommand} failed with {status}");
    }
    Ok(())
}

/// Writes `(id, sequence)` pairs as FASTA to `path`, returning it.
fn write_fasta(path: &Path, sequences: &[(String, String)]) -> Result<PathBuf> {
    let text: String = sequences
        .iter()
        .map(|(id, s)| format!(">{id}\n{s}\n"))
        .collect();
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Clusters sequences with MMseqs2 (`mmseqs easy-cluster`) at `min_identity`, returning
/// member → representative. Needs the `mmseqs` binary (Debian package `mmseqs2`).
pub fn mmseqs_clusters(
    sequences: &[(String, String)],
    min_identity: f64,
    work: &Path,
) -> Result<HashMap<String, String>> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let fasta = write_fasta(&work.join("input.fasta"), sequences)?;
    let prefix: PathBuf = work.join("clusters");
    run_mmseqs(
        "easy-cluster",
        &[
            fasta.as_os_str(),
            prefix.as_os_str(),
            work.join("tmp").as_os_str(),
        ],
        &[
            "--min-seq-id",
            &min_identity.to_string(),
            "-c",
            "0.8",
            "--cov-mode",
            "0",
        ],
    )?;
    let tsv = work.join("clusters_cluster.tsv");
    Ok(read_tsv(&tsv, 0, 2)?
        .into_iter()
        .map(|r| (r[1].clone(), r[0].clone()))
        .collect())
}

/// One MMseqs2 alignment of a query to a target.
#[derive(Debug, Clone, PartialEq)]
pub struct MmseqsHit {
    /// Target identifier.
    pub target: String,
    /// Sequence identity in [0, 1].
    pub identity: f32,
    /// Bit score.
    pub bits: f64,
    /// Aligned `(query, target)` positions, 0-based (gap columns left out).
    pub pairs: Vec<(u32, u32)>,
}

/// Aligned position pairs of an MMseqs2 alignment given by its start positions (1-based) and
/// aligned strings (`-` for gaps).
fn aligned_pairs(qstart: usize, tstart: usize, qaln: &str, taln: &str) -> Vec<(u32, u32)> {
    let (mut q, mut t) = (
        qstart.saturating_sub(1) as u32,
        tstart.saturating_sub(1) as u32,
    );
    let mut pairs = Vec::new();
    for (a, b) in qaln.bytes().zip(taln.bytes()) {
        match (a == b'-', b == b'-') {
            (false, false) => {
                pairs.push((q, t));
                q += 1;
                t += 1;
            }
            (false, true) => q += 1,
            (true, false) => t += 1,
            (true, true) => {}
        }
    }
    pairs
}

/// The best MMseqs2 hit (`mmseqs easy-search`, default sensitivity) of each query in the
/// targets, with its alignment. Queries without a hit are absent.
pub fn mmseqs_best_alignments(
    queries: &[(String, String)],
    targets: &[(String, String)],
    work: &Path,
) -> Result<HashMap<String, MmseqsHit>> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let q = write_fasta(&work.join("queries.fasta"), queries)?;
    let t = write_fasta(&work.join("targets.fasta"), targets)?;
    let out = work.join("hits.m8");
    run_mmseqs(
        "easy-search",
        &[
            q.as_os_str(),
            t.as_os_str(),
            out.as_os_str(),
            work.join("tmp").as_os_str(),
        ],
        &[
            "--format-output",
            "query,target,fident,evalue,bits,qstart,tstart,qaln,taln",
        ],
    )?;
    let mut best: HashMap<String, MmseqsHit> = HashMap::new();
    for r in read_tsv(&out, 0, 9)? {
        let hit = MmseqsHit {
            target: r[1].clone(),
            identity: r[2].parse().unwrap_or(0.0),
            bits: r[4].parse().unwrap_or(0.0),
            pairs: aligned_pairs(
                r[5].parse().unwrap_or(1),
                r[6].parse().unwrap_or(1),
                &r[7],
                &r[8],
            ),
        };
        match best.get(&r[0]) {
            Some(b) if b.bits >= hit.bits => {}
            _ => {
                best.insert(r[0].clone(), hit);
            }
        }
    }
    Ok(best)
}

/// The best MMseqs2 hit of each query in the targets: query → (target, identity in [0, 1]).
/// Queries without a hit are absent.
pub fn mmseqs_best_hits(
    queries: &[(String, String)],
    targets: &[(String, String)],
    work: &Path,
) -> Result<HashMap<String, (String, f32)>> {
    Ok(mmseqs_best_alignments(queries, targets, work)?
        .into_iter()
        .map(|(q, h)| (q, (h.target, h.identity)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_pairs_skip_gap_columns() {
        // Query positions 3.., target 1..: "AC-DE" over "A-QDE".
        assert_eq!(
            aligned_pairs(3, 1, "AC-DE", "A-QDE"),
            vec![(2, 0), (4, 2), (5, 3)]
        );
    }

    #[test]
    fn go_propagation_follows_every_parent() {
        let g = GoGraph::from_edges(&[("c", "b"), ("b", "a"), ("c", "d")]);
        let p = g.propagate(&["c".to_string()]);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn go_graph_orientation_comes_from_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let names = dir.path().join("names.tsv");
        std::fs::write(&names, "GO:0008150\tbiological_process\n").unwrap();
        // (parent, child) rows, as in the shared data, and (child, parent) rows.
        for (rows, label) in [
            (
                "GO:0008150\tGO:1\t1\tis_a\nGO:1\tGO:2\t1\tis_a\n",
                "parent first",
            ),
            (
                "GO:1\tGO:0008150\t1\tis_a\nGO:2\tGO:1\t1\tis_a\n",
                "child first",
            ),
        ] {
            let graph = dir.path().join("graph.tsv");
            std::fs::write(&graph, rows).unwrap();
            let g = GoGraph::read(&graph, &names).unwrap();
            let up: Vec<String> = g.with_ancestors("GO:2").into_iter().collect();
            assert_eq!(up, vec!["GO:0008150", "GO:1", "GO:2"], "{label}");
            assert_eq!(g.with_ancestors("GO:0008150").len(), 1, "{label}");
        }
    }

    #[test]
    fn three_line_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, ">p_A\nMKT\n010\n").unwrap();
        let r = read_residue_labels(&ok).unwrap();
        assert_eq!(r[0].labels, vec![false, true, false]);
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, ">p_A\nMKT\n01\n").unwrap();
        let e = read_residue_labels(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.txt:3") && e.contains("2 labels"), "{e}");
        std::fs::write(&bad, ">p_A\nMKT\n01x\n").unwrap();
        assert!(read_residue_labels(&bad)
            .unwrap_err()
            .to_string()
            .contains("'x'"));
    }

    #[test]
    fn cluster_split_keeps_clusters_together() {
        let ids: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let clusters: HashMap<String, String> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    format!("c{}", id[1..].parse::<usize>().unwrap() / 2),
                )
            })
            .collect();
        let (train, test) = cluster_split(&clusters, &ids, 0.3, 7);
        assert_eq!(train.len() + test.len(), 10);
        for id in &test {
            let mate = format!("p{}", id[1..].parse::<usize>().unwrap() ^ 1);
            assert!(test.contains(&mate), "cluster of {id} split");
        }
    }

    #[test]
    fn mmseqs_best_hit_of_a_copy_is_the_original() {
        if std::process::Command::new("mmseqs")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: mmseqs (Debian package mmseqs2) is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let a = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ";
        let b = "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADAL";
        let pair = |id: &str, s: &str| (id.to_string(), s.to_string());
        let hits =
            mmseqs_best_hits(&[pair("q", a)], &[pair("ta", a), pair("tb", b)], dir.path()).unwrap();
        let (target, identity) = &hits["q"];
        assert_eq!(target, "ta");
        assert!((identity - 1.0).abs() < 1e-6);
    }
}
