//! The CPU inference variant of ESM-2, chosen once at load (as text-embeddings-inference picks
//! `FlashBertModel` over `BertModel`).
//!
//! When every weight a block needs is a contiguous f32 host tensor that tracks no gradients,
//! loading builds a [`CpuEsm`]: each block's parameters taken once into named fields (tensors
//! sharing the model's storage, so nothing is copied), with the packed int8 or bf16
//! projections of a model installed at a lower precision. Its passes run [`super::fast`]'s
//! packed-token blocks. Passes that need attention maps (the contact head), training and
//! other devices take the tensor path, which the tests hold this variant to.

use candle_core::{DType, Result, Tensor};

use super::fast::{self, BlockWeights, Dims, Packing, Projection, Workspace};
use super::packed::{PackedBlock, PackedLinear};
use super::{EsmForMaskedLM, EsmLayer, ForwardOptions, ForwardOutput};
use crate::config::EsmConfig;

/// A layer norm's scale and shift.
#[derive(Debug, Clone)]
struct NormParams {
    weight: Tensor,
    bias: Tensor,
}

impl NormParams {
    fn of(norm: &candle_nn::LayerNorm) -> Option<Self> {
        Some(Self {
            weight: usable(norm.weight())?,
            bias: usable(norm.bias()?)?,
        })
    }
}

/// A projection: its f32 weight `(out, in)`, its bias, and the packed weight that replaces the
/// f32 one in products for a model installed at int8 or bf16.
#[derive(Debug, Clone)]
struct ProjectionParams {
    weight: Tensor,
    bias: Tensor,
    packed: Option<PackedLinear>,
}

impl ProjectionParams {
    fn of(linear: &candle_nn::Linear, packed: Option<PackedLinear>) -> Option<Self> {
        Some(Self {
            weight: usable(linear.weight())?,
            bias: usable(linear.bias()?)?,
            packed,
        })
    }

    /// The weight the product uses: packed when there is one.
    fn projection<'a>(&'a self, f32_weight: &'a [f32]) -> Projection<'a> {
        self.packed
            .as_ref()
            .map_or(Projection::F32(f32_weight), Projection::Packed)
    }
}

/// One transformer block's parameters.
#[derive(Debug, Clone)]
struct CpuBlock {
    attention_norm: NormParams,
    /// Query, key and value projections stacked `(3·hidden, hidden)`.
    qkv: ProjectionParams,
    attention_output: ProjectionParams,
    ffn_norm: NormParams,
    ffn_up: ProjectionParams,
    ffn_down: ProjectionParams,
}

impl CpuBlock {
    fn of(layer: &EsmLayer, packed: Option<PackedBlock>) -> Option<Self> {
        let attention = layer.attention();
        let (ffn_norm, up, down) = layer.feed_forward();
        let (qkv_p, out_p, up_p, down_p) = match packed {
            Some(p) => (Some(p.qkv), Some(p.out), Some(p.ff1), Some(p.ff2)),
            None => (None, None, None, None),
        };
        Some(Self {
            attention_norm: NormParams::of(attention.norm())?,
            qkv: ProjectionParams::of(attention.fused_qkv()?, qkv_p)?,
            attention_output: ProjectionParams::of(attention.output(), out_p)?,
            ffn_norm: NormParams::of(ffn_norm)?,
            ffn_up: ProjectionParams::of(up, up_p)?,
            ffn_down: ProjectionParams::of(down, down_p)?,
        })
    }

    /// Runs the block on packed rows `xs` in place.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        xs: &mut [f32],
        packing: &Packing,
        positions: &[u32],
        dims: Dims,
        cos: &[f32],
        sin: &[f32],
        ws: &mut Workspace,
    ) -> Result<()> {
        let tensors = [
            &self.attention_norm.weight,
            &self.attention_norm.bias,
            &self.qkv.weight,
            &self.qkv.bias,
            &self.attention_output.weight,
            &self.attention_output.bias,
            &self.ffn_norm.weight,
            &self.ffn_norm.bias,
            &self.ffn_up.weight,
            &self.ffn_up.bias,
            &self.ffn_down.weight,
            &self.ffn_down.bias,
        ];
        let guards = tensors.map(Tensor::storage_and_layout);
        let mut slices = Vec::with_capacity(guards.len());
        for guard in &guards {
            slices.push(fast::host_slice(guard)?);
        }
        let [ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, ff1_w, ff1_b, ff2_w, ff2_b] =
            slices[..]
        else {
            candle_core::bail!("a block has twelve parameter tensors");
        };
        let weights = BlockWeights {
            ln1_w,
            ln1_b,
            qkv_w: self.qkv.projection(qkv_w),
            qkv_b,
            out_w: self.attention_output.projection(out_w),
            out_b,
            ln2_w,
            ln2_b,
            ff1_w: self.ffn_up.projection(ff1_w),
            ff1_b,
            ff2_w: self.ffn_down.projection(ff2_w),
            ff2_b,
        };
        fast::block_forward(xs, packing, positions, &weights, dims, cos, sin, ws);
        Ok(())
    }
}

/// `t` when it can feed this variant (a contiguous f32 host tensor without gradients).
fn usable(t: &Tensor) -> Option<Tensor> {
    fast::eligible(t).then(|| t.clone())
}

/// ESM-2's blocks and final norm prepared for CPU inference on packed tokens.
#[derive(Debug, Clone)]
pub(crate) struct CpuEsm {
    blocks: Vec<CpuBlock>,
    final_norm: NormParams,
    dims: Dims,
}

impl CpuEsm {
    /// The variant of a loaded model, or `None` when the model cannot run on it (weights on
    /// another device, in another dtype, or trainable). `packed` are the blocks' int8 or bf16
    /// projections of a model installed at that precision.
    pub fn build(model: &EsmForMaskedLM, packed: Option<Vec<PackedBlock>>) -> Option<Self> {
        usable(model.embeddings.word_weight())?;
        let mut packed = packed.map(Vec::into_iter);
        let blocks = model
            .layers
            .iter()
            .map(|layer| CpuBlock::of(layer, packed.as_mut().and_then(Iterator::next)))
            .collect::<Option<Vec<_>>>()?;
        let config = &model.config;
        Some(Self {
            blocks,
            final_norm: NormParams::of(model.final_norm.inner())?,
            dims: dims_of(config),
        })
    }

    /// [`EsmForMaskedLM::forward`] without contacts: the blocks run on the packed real tokens
    /// of the batch; requested hidden states come back zero at padding.
    pub fn forward(
        &self,
        model: &EsmForMaskedLM,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        options: &ForwardOptions,
    ) -> Result<ForwardOutput> {
        let num_layers = self.blocks.len();
        let (batch, seq_len) = input_ids.dims2()?;
        let h = self.dims.hidden;
        let mask_host = attention_mask
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let last_needed = if options.logits {
            num_layers
        } else {
            options.layers.iter().copied().max().unwrap_or(num_layers)
        };
        let packing = Packing::from_mask(&mask_host, batch, seq_len);
        let positions: Vec<u32> = packing.origin.iter().map(|&(_, t)| t as u32).collect();
        let ids_host = input_ids
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let mut xs =
            model
                .embeddings
                .forward_packed(&ids_host, &mask_host, &packing, &model.config)?;
        let device = input_ids.device();
        let unpack = |packed: &[f32]| -> Result<Tensor> {
            Tensor::from_vec(
                packing.unpack(packed, batch, seq_len, h),
                (batch, seq_len, h),
                device,
            )
        };
        let mut hidden: Vec<(usize, Tensor)> = Vec::new();
        if options.layers.contains(&0) && num_layers > 0 {
            hidden.push((0, unpack(&xs)?));
        }
        let (cos, sin) = model.rotary.cos_sin(seq_len)?;
        let (cos_g, sin_g) = (cos.storage_and_layout(), sin.storage_and_layout());
        let (cos, sin) = (fast::host_slice(&cos_g)?, fast::host_slice(&sin_g)?);
        let mut ws = Workspace::default();
        for (i, block) in self.blocks.iter().enumerate().take(last_needed) {
            block.forward(&mut xs, &packing, &positions, self.dims, cos, sin, &mut ws)?;
            if i + 1 < num_layers && options.layers.contains(&(i + 1)) {
                hidden.push((i + 1, unpack(&xs)?));
            }
        }
        drop(ws);
        let want_final = options.layers.contains(&num_layers) || options.logits;
        let final_hidden = if want_final && last_needed == num_layers {
            let norm = &self.final_norm;
            let (wg, bg) = (
                norm.weight.storage_and_layout(),
                norm.bias.storage_and_layout(),
            );
            let normed = fast::layer_norm(
                &xs,
                fast::host_slice(&wg)?,
                fast::host_slice(&bg)?,
                self.dims.eps,
            );
            Some(unpack(&normed)?)
        } else {
            None
        };
        model.assemble_output(options, hidden, final_hidden, None)
    }
}

/// The block shapes of `config`.
fn dims_of(config: &EsmConfig) -> Dims {
    Dims {
        hidden: config.hidden_size,
        intermediate: config.intermediate_size,
        heads: config.num_attention_heads,
        head_dim: config.head_dim(),
        eps: config.layer_norm_eps as f32,
    }
}
