//! Graph neural network layers over batched residue graphs (edge index + scatter-add).
//!
//! - [`GcnLayer`]: graph convolution (Kipf & Welling), `H' = Â H W + b` with the symmetric
//!   normalisation of [`GraphBatch::gcn_weight`];
//! - [`GatedLayer`]: residual gated graph convolution (Bresson & Laurent): every message is
//!   gated by `σ(A hᵢ + B hⱼ)`, so the layer learns which contacts matter.

use candle_core::{Device, Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::esm::{layer_norm, Norm};
use crate::graph::GraphBatch;

/// The kind of message-passing layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GnnKind {
    /// Graph convolution.
    Gcn,
    /// Residual gated graph convolution.
    Gated,
}

/// Hyper-parameters of a stack of GNN layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GnnConfig {
    /// Layer kind.
    pub kind: GnnKind,
    /// Number of message-passing layers (0: a per-residue MLP, the ablation baseline).
    pub layers: usize,
    /// Width of the node states.
    pub hidden: usize,
}

/// A [`GraphBatch`] as tensors on a device.
#[derive(Debug, Clone)]
pub struct EdgeIndex {
    /// Source node of each directed edge, `[E]` u32.
    pub source: Tensor,
    /// Target node of each directed edge, `[E]` u32.
    pub target: Tensor,
    /// GCN weight of each edge, `[E, 1]`.
    pub gcn_weight: Tensor,
    /// GCN self-loop weight of each node, `[N, 1]`.
    pub self_weight: Tensor,
    /// Number of nodes.
    pub num_nodes: usize,
}

impl EdgeIndex {
    /// Moves a graph batch to `device`.
    pub fn new(batch: &GraphBatch, device: &Device) -> Result<Self> {
        let e = batch.num_edges();
        Ok(Self {
            source: Tensor::from_slice(&batch.source, e, device)?,
            target: Tensor::from_slice(&batch.target, e, device)?,
            gcn_weight: Tensor::from_slice(&batch.gcn_weight, (e, 1), device)?,
            self_weight: Tensor::from_slice(&batch.self_weight, (batch.num_nodes, 1), device)?,
            num_nodes: batch.num_nodes,
        })
    }

    /// Sums `messages` (`[E, F]`) into their target nodes: `[N, F]`.
    pub fn scatter_to_targets(&self, messages: &Tensor) -> Result<Tensor> {
        let width = messages.dim(D::Minus1)?;
        let zeros = Tensor::zeros((self.num_nodes, width), messages.dtype(), messages.device())?;
        if self.source.dim(0)? == 0 {
            return Ok(zeros);
        }
        zeros.index_add(&self.target, messages, 0)
    }
}

/// Graph convolution layer.
#[derive(Debug, Clone)]
pub struct GcnLayer {
    linear: Linear,
}

impl GcnLayer {
    /// Loads `linear.weight`/`linear.bias` of a `hidden → hidden` layer.
    pub fn load(vb: VarBuilder, hidden: usize) -> Result<Self> {
        Ok(Self {
            linear: linear(hidden, hidden, vb.pp("linear"))?,
        })
    }

    /// `ReLU(Â H W + b) + H` over the batch.
    pub fn forward(&self, h: &Tensor, edges: &EdgeIndex) -> Result<Tensor> {
        let xw = self.linear.forward(h)?;
        let own = xw.broadcast_mul(&edges.self_weight)?;
        let messages = if edges.source.dim(0)? == 0 {
            xw.zeros_like()?
        } else {
            let from = xw
                .index_select(&edges.source, 0)?
                .broadcast_mul(&edges.gcn_weight)?;
            edges.scatter_to_targets(&from)?
        };
        (own + messages)?.relu()? + h
    }
}

/// Residual gated graph convolution layer.
#[derive(Debug, Clone)]
pub struct GatedLayer {
    own: Linear,
    message: Linear,
    gate_target: Linear,
    gate_source: Linear,
    norm: Norm,
}

impl GatedLayer {
    /// Loads a `hidden → hidden` gated layer.
    pub fn load(vb: VarBuilder, hidden: usize) -> Result<Self> {
        Ok(Self {
            own: linear(hidden, hidden, vb.pp("own"))?,
            message: linear(hidden, hidden, vb.pp("message"))?,
            gate_target: linear(hidden, hidden, vb.pp("gate_target"))?,
            gate_source: linear(hidden, hidden, vb.pp("gate_source"))?,
            norm: layer_norm(hidden, 1e-5, vb.pp("norm"))?,
        })
    }

    /// `h + ReLU(LN(U hᵢ + Σⱼ σ(A hᵢ + B hⱼ) ⊙ V hⱼ))`.
    pub fn forward(&self, h: &Tensor, edges: &EdgeIndex) -> Result<Tensor> {
        let own = self.own.forward(h)?;
        let aggregated = if edges.source.dim(0)? == 0 {
            own.zeros_like()?
        } else {
            let gate_t = self
                .gate_target
                .forward(h)?
                .index_select(&edges.target, 0)?;
            let gate_s = self
                .gate_source
                .forward(h)?
                .index_select(&edges.source, 0)?;
            let gate = candle_nn::ops::sigmoid(&(gate_t + gate_s)?)?;
            let values = self.message.forward(h)?.index_select(&edges.source, 0)?;
            edges.scatter_to_targets(&(gate * values)?)?
        };
        let updated = self.norm.forward(&(own + aggregated)?)?.relu()?;
        h + updated
    }
}

/// One message-passing layer of either kind.
#[derive(Debug, Clone)]
pub enum GnnLayer {
    /// Graph convolution.
    Gcn(GcnLayer),
    /// Gated graph convolution.
    Gated(GatedLayer),
}

/// A stack of message-passing layers.
#[derive(Debug, Clone)]
pub struct GraphEncoder {
    layers: Vec<GnnLayer>,
}

impl GraphEncoder {
    /// Loads `layers.{i}` of the configured kind.
    pub fn load(vb: VarBuilder, config: &GnnConfig) -> Result<Self> {
        let layers = (0..config.layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(match config.kind {
                    GnnKind::Gcn => GnnLayer::Gcn(GcnLayer::load(vb, config.hidden)?),
                    GnnKind::Gated => GnnLayer::Gated(GatedLayer::load(vb, config.hidden)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Runs every layer over node states `h` (`[N, hidden]`).
    pub fn forward(&self, h: &Tensor, edges: &EdgeIndex) -> Result<Tensor> {
        let mut h = h.clone();
        for layer in &self.layers {
            h = match layer {
                GnnLayer::Gcn(l) => l.forward(&h, edges)?,
                GnnLayer::Gated(l) => l.forward(&h, edges)?,
            };
        }
        Ok(h)
    }
}

thread_local! {
    static DROPOUT_RNG: std::cell::RefCell<rand::rngs::StdRng> =
        std::cell::RefCell::new(rand::SeedableRng::seed_from_u64(0));
}

/// Seeds the dropout masks drawn on this thread, so head training is reproducible.
pub fn seed_dropout(seed: u64) {
    DROPOUT_RNG.with(|r| *r.borrow_mut() = rand::SeedableRng::seed_from_u64(seed));
}

/// Dropout that is the identity outside training; masks come from the seeded thread RNG
/// (see [`seed_dropout`]).
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if !(train && p > 0.0) {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let n = x.elem_count();
    let mask: Vec<f32> = DROPOUT_RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n)
            .map(|_| {
                if rand::Rng::random::<f32>(&mut *r) < p {
                    0.0
                } else {
                    keep
                }
            })
            .collect()
    });
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphOptions, ResidueGraph};
    use crate::test_util::max_abs_diff;
    use candle_core::DType;
    use candle_nn::VarMap;

    fn setup(kind: GnnKind) -> (VarMap, GraphEncoder, EdgeIndex, Tensor) {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let cfg = GnnConfig {
            kind,
            layers: 2,
            hidden: 8,
        };
        let enc = GraphEncoder::load(vb, &cfg).unwrap();
        let o = GraphOptions::default();
        let a = ResidueGraph::from_pairs(6, [(0, 5)], &o).unwrap();
        let b = ResidueGraph::sequence_only(4, &o);
        let edges = EdgeIndex::new(&GraphBatch::new(&[&a, &b]), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (10, 8), &dev).unwrap();
        (map, enc, edges, x)
    }

    #[test]
    fn shapes_and_gradients_reach_every_parameter() {
        for kind in [GnnKind::Gcn, GnnKind::Gated] {
            let (map, enc, edges, x) = setup(kind);
            let y = enc.forward(&x, &edges).unwrap();
            assert_eq!(y.dims(), &[10, 8]);
            let loss = y.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in map.data().lock().unwrap().iter() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {name} ({kind:?})"));
                let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(norm.is_finite());
            }
        }
    }

    #[test]
    fn graphs_in_a_batch_do_not_leak_into_each_other() {
        for kind in [GnnKind::Gcn, GnnKind::Gated] {
            let (_map, enc, edges, x) = setup(kind);
            let y = enc.forward(&x, &edges).unwrap();
            // Change only the second graph's inputs: the first graph's outputs must not move.
            let bumped = Tensor::cat(
                &[
                    x.narrow(0, 0, 6).unwrap(),
                    (x.narrow(0, 6, 4).unwrap() + 1.0).unwrap(),
                ],
                0,
            )
            .unwrap();
            let y2 = enc.forward(&bumped, &edges).unwrap();
            let diff = max_abs_diff(&y.narrow(0, 0, 6).unwrap(), &y2.narrow(0, 0, 6).unwrap());
            assert_eq!(diff, 0.0);
            let moved = max_abs_diff(&y.narrow(0, 6, 4).unwrap(), &y2.narrow(0, 6, 4).unwrap());
            assert!(moved > 0.0);
        }
    }

    #[test]
    fn a_contact_edge_carries_information() {
        // Node 0 is linked to node 5 only through the contact: changing node 5 moves node 0.
        let (_map, enc, edges, x) = setup(GnnKind::Gated);
        let y = enc.forward(&x, &edges).unwrap();
        let mut v = x.to_vec2::<f32>().unwrap();
        v[5][0] += 3.0;
        let x2 = Tensor::new(v, &Device::Cpu).unwrap();
        let y2 = enc.forward(&x2, &edges).unwrap();
        assert!(max_abs_diff(&y.get(0).unwrap(), &y2.get(0).unwrap()) > 0.0);
    }
}
