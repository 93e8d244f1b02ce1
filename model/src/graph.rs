//! Residue graphs: one node per residue, edges between sequence neighbours and between
//! residues in spatial contact (predicted by the model's contact head or measured in a
//! structure), and their batched edge-index form for the GNN layers.

use petgraph::graph::{NodeIndex, UnGraph};

use crate::error::{PlmError, Result};
use crate::structure::ChainTrace;
use crate::surface::ChainGeometry;

/// How edges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphOptions {
    /// Residues up to this many positions apart along the chain are always linked.
    pub sequence_window: usize,
    /// Predicted contacts with at least this probability become edges.
    pub contact_threshold: f32,
    /// C-alpha pairs closer than this many Å become edges (structures).
    pub distance_cutoff: f64,
}

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            sequence_window: 2,
            contact_threshold: 0.5,
            distance_cutoff: 8.0,
        }
    }
}

/// The residue graph of one protein; edge weights are contact probabilities (1 for sequence
/// neighbours and structural contacts).
#[derive(Debug, Clone)]
pub struct ResidueGraph {
    graph: UnGraph<usize, f32>,
}

impl ResidueGraph {
    /// A chain of `length` residues linked to their neighbours within the sequence window.
    pub fn sequence_only(length: usize, options: &GraphOptions) -> Self {
        let mut graph = UnGraph::with_capacity(length, length * options.sequence_window);
        for i in 0..length {
            graph.add_node(i);
        }
        for i in 0..length {
            for d in 1..=options.sequence_window {
                if i + d < length {
                    graph.add_edge(NodeIndex::new(i), NodeIndex::new(i + d), 1.0);
                }
            }
        }
        Self { graph }
    }

    fn link(&mut self, i: usize, j: usize, weight: f32, options: &GraphOptions) {
        if i.abs_diff(j) > options.sequence_window {
            self.graph
                .update_edge(NodeIndex::new(i), NodeIndex::new(j), weight);
        }
    }

    /// Sequence neighbours plus predicted contacts: `probabilities` is the row-major
    /// `length × length` contact map of the model's contact head.
    pub fn from_contact_map(
        length: usize,
        probabilities: &[f32],
        options: &GraphOptions,
    ) -> Result<Self> {
        if probabilities.len() != length * length {
            return Err(PlmError::Internal(format!(
                "contact map has {} values, expected {length}×{length}",
                probabilities.len()
            )));
        }
        let mut g = Self::sequence_only(length, options);
        for i in 0..length {
            for j in i + 1..length {
                let p = probabilities[i * length + j];
                if p >= options.contact_threshold {
                    g.link(i, j, p, options);
                }
            }
        }
        Ok(g)
    }

    /// Sequence neighbours plus listed contacts `(i, j)` (0-based residue indices).
    pub fn from_pairs(
        length: usize,
        pairs: impl IntoIterator<Item = (usize, usize)>,
        options: &GraphOptions,
    ) -> Result<Self> {
        let mut g = Self::sequence_only(length, options);
        for (i, j) in pairs {
            if i >= length || j >= length {
                return Err(PlmError::InvalidArgument(format!(
                    "contact ({i}, {j}) outside a protein of {length} residues"
                )));
            }
            if i != j {
                g.link(i, j, 1.0, options);
            }
        }
        Ok(g)
    }

    /// Sequence neighbours plus C-alpha contacts of a structure whose residues were mapped to
    /// sequence positions with [`crate::structure::map_to_sequence`].
    pub fn from_structure(
        length: usize,
        trace: &ChainTrace,
        mapping: &[Option<usize>],
        options: &GraphOptions,
    ) -> Result<Self> {
        let cutoff = options.distance_cutoff;
        let geometry = ChainGeometry::from_trace(length, trace, mapping, cutoff);
        Self::from_pairs(length, geometry.contacts(cutoff), options)
    }

    /// Number of residues.
    pub fn num_nodes(&self) -> usize {
        self.graph.node_count()
    }

    /// Number of undirected edges.
    pub fn num_edges(&self) -> usize {
        self.graph.edge_count()
    }

    /// Whether residues `i` and `j` are linked.
    pub fn has_edge(&self, i: usize, j: usize) -> bool {
        self.graph
            .find_edge(NodeIndex::new(i), NodeIndex::new(j))
            .is_some()
    }

    /// Number of neighbours of residue `i`.
    pub fn degree(&self, i: usize) -> usize {
        self.graph.neighbors(NodeIndex::new(i)).count()
    }

    /// Directed edges (both directions of every undirected edge) as `(source, target, weight)`.
    pub fn directed_edges(&self) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        self.graph.edge_indices().flat_map(move |e| {
            let (a, b) = self.graph.edge_endpoints(e).expect("edge of this graph");
            let w = self.graph[e];
            [(a.index(), b.index(), w), (b.index(), a.index(), w)]
        })
    }
}

/// Several residue graphs stacked into one disjoint graph, in the form message passing uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphBatch {
    /// Total nodes.
    pub num_nodes: usize,
    /// Source node of every directed edge.
    pub source: Vec<u32>,
    /// Target node of every directed edge.
    pub target: Vec<u32>,
    /// Symmetric GCN normalisation `1/sqrt(d_i d_j)` of every directed edge, with self-loops
    /// counted in the degrees.
    pub gcn_weight: Vec<f32>,
    /// `1/(d_i)` for the self-loop of every node.
    pub self_weight: Vec<f32>,
    /// First node of each graph, plus the total at the end.
    pub offsets: Vec<usize>,
}

impl GraphBatch {
    /// Stacks graphs, renumbering nodes.
    pub fn new(graphs: &[&ResidueGraph]) -> Self {
        let mut batch = GraphBatch {
            offsets: vec![0],
            ..Default::default()
        };
        for g in graphs {
            let offset = batch.num_nodes;
            let degree: Vec<f32> = (0..g.num_nodes())
                .map(|i| (g.degree(i) + 1) as f32)
                .collect();
            for (s, t, _) in g.directed_edges() {
                batch.source.push((offset + s) as u32);
                batch.target.push((offset + t) as u32);
                batch.gcn_weight.push(1.0 / (degree[s] * degree[t]).sqrt());
            }
            batch.self_weight.extend(degree.iter().map(|d| 1.0 / d));
            batch.num_nodes += g.num_nodes();
            batch.offsets.push(batch.num_nodes);
        }
        batch
    }

    /// Number of directed edges.
    pub fn num_edges(&self) -> usize {
        self.source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_window_links_neighbours() {
        let g = ResidueGraph::sequence_only(5, &GraphOptions::default());
        assert_eq!(g.num_edges(), 4 + 3);
        assert!(g.has_edge(0, 2) && !g.has_edge(0, 3));
    }

    #[test]
    fn contact_map_threshold_and_symmetry() {
        let n = 6;
        let mut p = vec![0.0f32; n * n];
        p[5] = 0.9; // (0,5)
        p[5 * n] = 0.9;
        p[n + 4] = 0.4; // (1,4) below threshold
        let g = ResidueGraph::from_contact_map(n, &p, &GraphOptions::default()).unwrap();
        assert!(g.has_edge(0, 5) && g.has_edge(5, 0));
        assert!(!g.has_edge(1, 4));
        assert!(ResidueGraph::from_contact_map(n, &p[1..], &GraphOptions::default()).is_err());
    }

    #[test]
    fn duplicate_contacts_make_one_edge() {
        let o = GraphOptions::default();
        let g = ResidueGraph::from_pairs(10, [(0, 9), (9, 0), (0, 9)], &o).unwrap();
        assert_eq!(
            g.num_edges(),
            ResidueGraph::sequence_only(10, &o).num_edges() + 1
        );
        assert!(ResidueGraph::from_pairs(3, [(0, 3)], &o).is_err());
    }

    #[test]
    fn batch_renumbers_and_normalises() {
        let o = GraphOptions {
            sequence_window: 1,
            ..Default::default()
        };
        let a = ResidueGraph::sequence_only(3, &o);
        let b = ResidueGraph::sequence_only(2, &o);
        let batch = GraphBatch::new(&[&a, &b]);
        assert_eq!(batch.num_nodes, 5);
        assert_eq!(batch.offsets, vec![0, 3, 5]);
        assert_eq!(batch.num_edges(), 2 * (2 + 1));
        // Edge 3->4 of the second graph: both ends have degree 1 (+1 self loop).
        let k = (0..batch.num_edges())
            .find(|&k| batch.source[k] == 3 && batch.target[k] == 4)
            .unwrap();
        assert!((batch.gcn_weight[k] - 0.5).abs() < 1e-6);
        // Middle node of the first graph has two neighbours: self weight 1/3.
        assert!((batch.self_weight[1] - 1.0 / 3.0).abs() < 1e-6);
    }
}
