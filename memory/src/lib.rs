//! Per-GPU memory estimate of one training run (weights, gradients, optimizer state, activations
//! at the token budget) from a Hugging Face `config.json`. No tensor library: the login node's
//! `sftctl plan` uses it. It models what `sftctl-runtime`'s trainer allocates (fp32 parameters,
//! Burn's saved tensors for backward); the method and its check are in docs/gpu.md.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `config.json` cannot be read or lacks a field the estimate needs.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` is not a model config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The `config.json` fields that decide memory (transformers' names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    #[serde(default)]
    pub num_key_value_heads: Option<u64>,
    #[serde(default)]
    pub head_dim: Option<u64>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

impl ModelShape {
    /// Reads `<model_dir>/config.json`.
    pub fn load(model_dir: &Path) -> Result<ModelShape, MemoryError> {
        let path = model_dir.join("config.json");
        let text = fs_err::read_to_string(&path).map_err(|source| MemoryError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| MemoryError::Parse { path, source })
    }

    fn kv_heads(&self) -> u64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> u64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Number of parameters, as transformers counts them (a tied LM head counted once).
    pub fn params(&self) -> u64 {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim();
        let kv = self.kv_heads() * self.head_dim();
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if self.attention_bias {
                q + 2 * kv + h
            } else {
                0
            };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { h * v };
        v * h + self.num_hidden_layers * layer + h + head
    }
}

/// What the run does that changes memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunShape {
    /// Tokens in one micro-batch on one GPU.
    pub tokens_per_micro_batch: u64,
    /// Longest packed row (attention is quadratic in it).
    pub max_seq_len: u64,
    /// Micro-batches per optimizer step on one GPU (> 1 keeps an accumulated gradient copy).
    pub micro_batches: u64,
    /// Ranks the optimizer state is sharded over (1: replicated AdamW).
    pub optimizer_shards: u64,
    /// The optimizer keeps its own fp32 copy of the weights (ZeRO-1's master shard) beside the
    /// moments.
    #[serde(default)]
    pub fp32_master: bool,
    /// Cross-entropy chunk in tokens (`None`: whole micro-batch).
    pub ce_chunk_tokens: Option<u64>,
    /// Per-block activation checkpointing.
    pub checkpoint_blocks: bool,
    /// bf16 weights, gradients and activations (`precision = "bf16"`); the optimizer's fp32
    /// master copy is `fp32_master`.
    #[serde(default)]
    pub bf16: bool,
    /// Attention through libtorch's fused kernel (`attention = "auto"` on a GPU): no
    /// `[heads × T × T]` scores or probabilities are kept for backward.
    #[serde(default)]
    pub fused_attention: bool,
}

/// Bytes per GPU, by component.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub params: u64,
    pub weights: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub logits: u64,
}

impl Estimate {
    /// The peak: weights and optimizer state live throughout; the backward frees activations
    /// while it produces gradients, so one micro-batch's gradients and the activations (with
    /// the logits) are not alive together at their full size: the larger of the two counts.
    /// An accumulated gradient copy (more than one micro-batch) lives beside both.
    pub fn total(&self) -> u64 {
        let one_grad = self.weights;
        let accumulated = self.gradients.saturating_sub(one_grad);
        self.weights + self.optimizer + accumulated + one_grad.max(self.activations + self.logits)
    }
}

/// fp32: 4 bytes.
const F32: u64 = 4;
/// bf16: 2 bytes.
const BF16: u64 = 2;

/// The estimate for `model` trained as `run` describes.
///
/// - weights: 4 B/parameter (2 in bf16); gradients: the same, twice when micro-batches are
///   accumulated (the running sum and the new micro-batch's); AdamW: two fp32 moments and, with
///   the flat optimizer (ZeRO-1, bf16), an fp32 master copy, over the shards.
/// - activations (at the weights' width): what Burn's autodiff keeps for backward in one
///   decoder block, per token:
///   about `12 hidden + 5 intermediate` floats, plus the attention scores and probabilities
///   (`3 heads × max_seq_len` floats per token, as the plain attention materialises them) or,
///   with the fused kernel, the kv heads repeated to the query heads (`2 heads × head_dim`) and
///   the log-sum-exp (`heads`); every block with the plain graph, one block plus each block's
///   input with checkpointing. The fused kernel's mask, `max_seq_len` per token, is one tensor
///   shared by every block.
/// - logits: three `[tokens × vocab]` fp32 tensors (logits, log-softmax, its saved output) over
///   the micro-batch, or over one chunk when the cross-entropy is chunked.
///
/// [`Estimate::total`] is the peak, not the sum of the terms.
pub fn estimate(model: &ModelShape, run: &RunShape) -> Estimate {
    let p = model.params();
    let t = run.tokens_per_micro_batch;
    let keys = run.max_seq_len.min(t.max(1));
    let heads = model.num_attention_heads;
    let attention = if run.fused_attention {
        2 * heads * model.head_dim() + heads
    } else {
        3 * heads * keys
    };
    let per_token_block = 12 * model.hidden_size + 5 * model.intermediate_size + attention;
    let width = if run.bf16 { BF16 } else { F32 };
    let block = t * per_token_block * width;
    let mask = if run.fused_attention {
        t * keys * width
    } else {
        0
    };
    let activations = mask
        + if run.checkpoint_blocks {
            block + model.num_hidden_layers * t * model.hidden_size * width
        } else {
            model.num_hidden_layers * block
        };
    let logit_rows = run.ce_chunk_tokens.map_or(t, |c| c.min(t));
    Estimate {
        params: p,
        weights: p * width,
        gradients: p * width * if run.micro_batches > 1 { 2 } else { 1 },
        optimizer: (2 + u64::from(run.fp32_master)) * p * F32 / run.optimizer_shards.max(1),
        activations,
        logits: 3 * logit_rows * model.vocab_size * F32,
    }
}

/// `n` bytes as GiB with one decimal.
pub fn gib(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published parameter counts of real configs (config.json fields copied from the Hub).
    #[test]
    fn parameter_counts_match_published_models() {
        let llama_3b = ModelShape {
            vocab_size: 128256,
            hidden_size: 3072,
            intermediate_size: 8192,
            num_hidden_layers: 28,
            num_attention_heads: 24,
            num_key_value_heads: Some(8),
            head_dim: Some(128),
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
        };
        assert_eq!(llama_3b.params(), 3_212_749_824);
        let llama_8b = ModelShape {
            vocab_size: 128256,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(8),
            head_dim: None,
            tie_word_embeddings: false,
            ..llama_3b.clone()
        };
        assert_eq!(llama_8b.params(), 8_030_261_248);
    }

    #[test]
    fn options_shrink_what_they_should() {
        let m: ModelShape = serde_json::from_str(
            r#"{"vocab_size":128256,"hidden_size":3072,"intermediate_size":8192,
            "num_hidden_layers":28,"num_attention_heads":24,"num_key_value_heads":8,
            "tie_word_embeddings":true}"#,
        )
        .unwrap();
        let plain = RunShape {
            tokens_per_micro_batch: 8192,
            max_seq_len: 2048,
            micro_batches: 4,
            optimizer_shards: 1,
            fp32_master: false,
            ce_chunk_tokens: None,
            checkpoint_blocks: false,
            bf16: false,
            fused_attention: false,
        };
        let e = estimate(&m, &plain);
        assert_eq!(e.weights, 4 * m.params());
        assert_eq!(e.gradients, 8 * m.params());
        assert_eq!(e.optimizer, 8 * m.params());
        assert_eq!(e.logits, 3 * 8192 * 128256 * 4);
        let lean = estimate(
            &m,
            &RunShape {
                optimizer_shards: 8,
                ce_chunk_tokens: Some(1024),
                checkpoint_blocks: true,
                ..plain
            },
        );
        assert_eq!(lean.optimizer, e.optimizer / 8);
        let zero1 = estimate(
            &m,
            &RunShape {
                optimizer_shards: 8,
                fp32_master: true,
                ..plain
            },
        );
        assert_eq!(zero1.optimizer, 12 * m.params() / 8);
        let bf16 = estimate(
            &m,
            &RunShape {
                optimizer_shards: 8,
                fp32_master: true,
                bf16: true,
                ..plain
            },
        );
        assert_eq!(
            (bf16.weights, bf16.gradients, bf16.optimizer),
            (2 * m.params(), 4 * m.params(), 12 * m.params() / 8)
        );
        assert_eq!(bf16.activations, e.activations / 2);
        assert_eq!(bf16.logits, e.logits, "the loss stays fp32");
        assert_eq!(lean.logits, e.logits / 8);
        assert!(lean.activations * 10 < e.activations);
        // Fused attention: per token and block, 2·24·128 + 24 floats instead of 3·24·2048, plus
        // one 8192 × 2048 mask.
        let fused = estimate(
            &m,
            &RunShape {
                fused_attention: true,
                ..plain
            },
        );
        assert_eq!(
            e.activations - fused.activations,
            28 * 8192 * (3 * 24 * 2048 - (2 * 24 * 128 + 24)) * 4 - 8192 * 2048 * 4
        );
        assert_eq!(gib(3 << 30), "3.0 GiB");
    }
}
