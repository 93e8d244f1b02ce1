//! `config.json` of an ESM-2 checkpoint, as written by Hugging Face `transformers`.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of an ESM-2 model (`EsmConfig` in `transformers`).
///
/// Unknown fields of `config.json` are ignored, so real hub configs load unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EsmConfig {
    /// Number of tokens (33 for ESM-2).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Maximum number of tokens, special tokens included (1026 for ESM-2).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `rotary` is supported (ESM-2).
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
    /// Rescale embeddings as in ESM-2's token dropout (on for every ESM-2 checkpoint).
    #[serde(default = "default_true")]
    pub token_dropout: bool,
    /// Layer norm on the embeddings (off for ESM-2).
    #[serde(default)]
    pub emb_layer_norm_before: Option<bool>,
    /// Id of `<mask>`.
    #[serde(default = "default_mask_id")]
    pub mask_token_id: u32,
    /// Id of `<pad>`.
    #[serde(default = "default_pad_id")]
    pub pad_token_id: u32,
    /// Activation; ESM-2 uses the exact (erf) GELU.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Architecture names, e.g. `["EsmForMaskedLM"]`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Always `esm`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_vocab_size() -> usize {
    33
}
fn default_max_positions() -> usize {
    1026
}
fn default_eps() -> f64 {
    1e-5
}
fn default_position_embedding_type() -> String {
    "rotary".into()
}
fn default_true() -> bool {
    true
}
fn default_mask_id() -> u32 {
    32
}
fn default_pad_id() -> u32 {
    1
}
fn default_act() -> String {
    "gelu".into()
}
fn default_model_type() -> String {
    "esm".into()
}

impl EsmConfig {
    /// A config of the given shape with ESM-2's defaults for everything else.
    pub fn esm2(hidden_size: usize, layers: usize, heads: usize, intermediate: usize) -> Self {
        Self {
            vocab_size: 33,
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            max_position_embeddings: 1026,
            layer_norm_eps: 1e-5,
            position_embedding_type: "rotary".into(),
            token_dropout: true,
            emb_layer_norm_before: Some(false),
            mask_token_id: 32,
            pad_token_id: 1,
            hidden_act: "gelu".into(),
            architectures: vec!["EsmForMaskedLM".into()],
            model_type: "esm".into(),
        }
    }

    /// The `facebook/esm2_t6_8M_UR50D` configuration.
    pub fn esm2_t6_8m() -> Self {
        Self::esm2(320, 6, 20, 1280)
    }

    /// The `facebook/esm2_t12_35M_UR50D` configuration.
    pub fn esm2_t12_35m() -> Self {
        Self::esm2(480, 12, 20, 1920)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Maximum residues per sequence (positions minus `<cls>`, `<eos>` and two spare slots, as in ESM-2: 1022).
    pub fn max_residues(&self) -> usize {
        self.max_position_embeddings.saturating_sub(4).max(1)
    }

    /// Checks that the configuration describes a model this crate can run.
    pub fn validate(&self) -> Result<(), String> {
        if self.model_type != "esm" {
            return Err(format!(
                "model_type is '{}', expected 'esm'",
                self.model_type
            ));
        }
        if self.position_embedding_type != "rotary" {
            return Err(format!(
                "position_embedding_type '{}' is not supported (ESM-2 uses 'rotary')",
                self.position_embedding_type
            ));
        }
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 {
            return Err(
                "hidden_size, num_attention_heads and num_hidden_layers must be positive".into(),
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(format!(
                "hidden_size {} must split into an even head width over {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_python"
        ) {
            return Err(format!("hidden_act '{}' is not supported", self.hidden_act));
        }
        Ok(())
    }

    /// Number of parameters of `EsmForMaskedLM` with this config (tied LM decoder counted once).
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let v = self.vocab_size;
        let per_layer = 4 * (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h);
        let contact = self.num_hidden_layers * self.num_attention_heads + 1;
        v * h + self.num_hidden_layers * per_layer + 2 * h + (h * h + h) + 2 * h + v + contact
    }
}
