//! The Llama-family causal LM (Llama, Mistral, Granite) as a Burn module: embedding, decoder
//! blocks, final norm and LM head, with packed-sequence attention. It reads a checked
//! [`ModelConfig`] and never names a backend; weights come from [`crate::weights`].

#[cfg(feature = "tch")]
pub mod fused;
mod input;
mod layers;
mod lean;
mod loss;

pub use input::{PackedBatch, PackedRow, positions_from_cu_seqlens, seq_ids_from_cu_seqlens};
pub use layers::{Attention, AttnMask, AttnOpts, Block, Mlp, RmsNorm, rotate_half};
pub use lean::{LeanOptions, loss_and_grads as lean_loss_and_grads};
pub use loss::{IGNORE_INDEX, loss_sum, shift_labels, to_dtype, to_f32, token_losses};

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::ModelConfig;

/// Switches that turn one feature of the forward pass off. Only the parity tests use them, to
/// show that each test fails without the feature it covers; `Ablation::default()` is the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ablation {
    /// Ignore `seq_ids`: attend across packed samples (and ignore position restarts).
    pub no_packing_mask: bool,
    /// Ignore `sliding_window`.
    pub no_sliding_window: bool,
    /// Ignore the Granite multipliers (use Llama's 1, 1, 1/sqrt(d), 1).
    pub no_granite_multipliers: bool,
    /// Ignore `rope_scaling` (plain RoPE frequencies).
    pub no_rope_scaling: bool,
    /// Map query heads to kv heads by tiling (`h % kv_heads`) instead of grouping.
    pub tiled_kv_heads: bool,
}

/// How attention is computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKernel {
    /// libtorch's fused `scaled_dot_product_attention` (forward and backward) when the tensors
    /// are libtorch's, the decomposed path on other backends.
    #[default]
    Auto,
    /// Always the decomposed path: scores, mask, fp32 softmax, probabilities times values.
    Plain,
}

impl std::str::FromStr for AttentionKernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AttentionKernel::Auto),
            "plain" => Ok(AttentionKernel::Plain),
            other => Err(format!(
                "unknown attention `{other}` (expected `auto` or `plain`)"
            )),
        }
    }
}

/// A causal LM. Linear weights are stored as Burn's `[in, out]` (the transpose of the Hugging
/// Face `[out, in]` layout); [`crate::weights`] transposes on load and save.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// `model.embed_tokens.weight`, `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `lm_head.weight` transposed, `[hidden, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub config: ModelConfig,
    #[module(skip)]
    pub ablation: Ablation,
    #[module(skip)]
    pub attention: AttentionKernel,
}

impl CausalLm {
    /// A model with random weights (normal, std `0.02`, norms at 1), as transformers initializes.
    pub fn random(config: &ModelConfig, device: &Device, seed: u64) -> CausalLm {
        let mut rng = SplitMix64(seed);
        let mut normal = |shape: &[usize]| -> Tensor<2> {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.normal() * 0.02).collect();
            Tensor::from_data(TensorData::new(v, [shape[0], shape[1]]), device)
        };
        let c = config;
        let h = c.hidden_size;
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        let bias = |n: usize, on: bool| on.then(|| Param::from_tensor(Tensor::zeros([n], device)));
        let layers = (0..c.num_hidden_layers)
            .map(|_| Block {
                input_layernorm: RmsNorm::ones(h, c.rms_norm_eps, device),
                post_attention_layernorm: RmsNorm::ones(h, c.rms_norm_eps, device),
                self_attn: Attention {
                    q_proj: Param::from_tensor(normal(&[h, q])),
                    k_proj: Param::from_tensor(normal(&[h, kv])),
                    v_proj: Param::from_tensor(normal(&[h, kv])),
                    o_proj: Param::from_tensor(normal(&[q, h])),
                    q_bias: bias(q, c.attention_bias),
                    k_bias: bias(kv, c.attention_bias),
                    v_bias: bias(kv, c.attention_bias),
                    o_bias: bias(h, c.attention_bias),
                },
                mlp: Mlp {
                    gate_proj: Param::from_tensor(normal(&[h, c.intermediate_size])),
                    up_proj: Param::from_tensor(normal(&[h, c.intermediate_size])),
                    down_proj: Param::from_tensor(normal(&[c.intermediate_size, h])),
                    gate_bias: bias(c.intermediate_size, c.mlp_bias),
                    up_bias: bias(c.intermediate_size, c.mlp_bias),
                    down_bias: bias(h, c.mlp_bias),
                },
            })
            .collect();
        CausalLm {
            embed_tokens: Param::from_tensor(normal(&[c.vocab_size, h])),
            layers,
            norm: RmsNorm::ones(h, c.rms_norm_eps, device),
            lm_head: (!c.tie_word_embeddings)
                .then(|| Param::from_tensor(normal(&[h, c.vocab_size]))),
            config: config.clone(),
            ablation: Ablation::default(),
            attention: AttentionKernel::default(),
        }
    }

    /// Logits `[B, T, vocab]` for `tokens` `[B, T]`.
    ///
    /// `positions` `[B, T]` are the rotary positions (restarting at 0 for each packed sample);
    /// `seq_ids` `[B, T]` say which sample each token belongs to: a token attends only to earlier
    /// tokens of the same row with the same id (and, for Mistral, at most `sliding_window` of
    /// them). Samples must be contiguous within a row. Build the three with [`PackedBatch`].
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        seq_ids: Tensor<2, Int>,
    ) -> Tensor<3> {
        let hidden = self.hidden_states(tokens, positions, seq_ids);
        self.lm_logits(hidden)
    }

    /// The final hidden states `[B, T, hidden]` (after the last RMSNorm).
    pub fn hidden_states(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        seq_ids: Tensor<2, Int>,
    ) -> Tensor<3> {
        let c = &self.config;
        let granite = !self.ablation.no_granite_multipliers;
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let mut x = burn::tensor::module::embedding(self.embed_tokens.val(), tokens);
        if granite && c.embedding_multiplier != 1.0 {
            x = x.mul_scalar(c.embedding_multiplier);
        }
        let (cos, sin) = self.rotary(positions, &device);
        let mask = self.attention_mask(seq_ids, b, t, &device);
        let residual_multiplier = if granite { c.residual_multiplier } else { 1.0 };
        let scale = if granite {
            c.attention_multiplier
        } else {
            1.0 / (c.head_dim as f64).sqrt()
        };
        let opts = AttnOpts {
            scale,
            tiled_kv_heads: self.ablation.tiled_kv_heads,
        };
        for layer in &self.layers {
            x = layer.forward(x, &cos, &sin, &mask, c, opts, residual_multiplier);
        }
        self.norm.forward(x)
    }

    /// The LM head (tied or not) and Granite's logit scaling.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let weight = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.val().transpose(),
        };
        let logits = hidden.matmul(weight.unsqueeze_dim(0));
        let scaling = self.config.logits_scaling;
        if !self.ablation.no_granite_multipliers && scaling != 1.0 {
            logits.div_scalar(scaling)
        } else {
            logits
        }
    }

    /// `cos` and `sin` `[B, 1, T, head_dim]` for the given positions (rotate-half layout),
    /// computed in fp32 and given the parameters' dtype (transformers does the same).
    fn rotary(&self, positions: Tensor<2, Int>, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let mut config = self.config.clone();
        if self.ablation.no_rope_scaling {
            config.rope_scaling = crate::config::RopeScaling::None;
        }
        let inv_freq = config.inv_freq();
        let half = inv_freq.len();
        let [b, t] = positions.dims();
        let inv: Tensor<3> = Tensor::from_data(TensorData::new(inv_freq, [1, 1, half]), device);
        let freqs = positions.float().unsqueeze_dim::<3>(2).mul(inv); // [B, T, D/2]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2); // [B, T, D]
        let emb = emb.reshape([b, 1, t, 2 * half]);
        let dtype = self.embed_tokens.val().dtype();
        (
            to_dtype(emb.clone().cos(), dtype),
            to_dtype(emb.sin(), dtype),
        )
    }

    /// Whether attention goes through libtorch's fused kernel on `device`.
    pub fn fused_attention(&self, device: &Device) -> bool {
        #[cfg(feature = "tch")]
        {
            self.attention == AttentionKernel::Auto
                && !self.ablation.tiled_kv_heads
                && fused::is_libtorch(device)
        }
        #[cfg(not(feature = "tch"))]
        {
            let _ = device;
            false
        }
    }

    /// Which keys each query may attend to, in the form the attention kernel takes.
    fn attention_mask(
        &self,
        seq_ids: Tensor<2, Int>,
        b: usize,
        t: usize,
        device: &Device,
    ) -> AttnMask {
        #[cfg(feature = "tch")]
        if self.fused_attention(device) {
            let window = self.config.sliding_window.is_some() && !self.ablation.no_sliding_window;
            // One sample per row (or packing ignored) and no window: the kernel's own causal mask.
            let one_sample_per_row = self.ablation.no_packing_mask
                || seq_ids
                    .clone()
                    .equal(seq_ids.clone().narrow(1, 0, 1).expand([b, t]))
                    .all()
                    .into_scalar::<bool>();
            if one_sample_per_row && !window {
                return AttnMask::Fused { bias: None };
            }
            let forbidden = self.forbidden(seq_ids, b, t, device).unsqueeze_dim::<4>(1);
            let dtype = self.embed_tokens.val().dtype();
            let bias =
                Tensor::<4>::zeros([b, 1, t, t], device).mask_fill(forbidden, f32::NEG_INFINITY);
            return AttnMask::Fused {
                bias: Some(to_dtype(bias, dtype)),
            };
        }
        let h = self.config.num_attention_heads;
        AttnMask::Plain(
            self.forbidden(seq_ids, b, t, device)
                .unsqueeze_dim::<4>(1)
                .expand([b, h, t, t]),
        )
    }

    /// `true` where attention is forbidden, `[B, T, T]`.
    fn forbidden(
        &self,
        seq_ids: Tensor<2, Int>,
        b: usize,
        t: usize,
        device: &Device,
    ) -> Tensor<3, burn::tensor::Bool> {
        let idx = Tensor::<1, Int>::arange(0..t as i64, device);
        let qi = idx.clone().unsqueeze_dim::<2>(1).expand([t, t]);
        let kj = idx.unsqueeze_dim::<2>(0).expand([t, t]);
        let diff = qi - kj; // query index minus key index
        let mut allowed = diff.clone().greater_equal_elem(0);
        if let Some(w) = self.config.sliding_window
            && !self.ablation.no_sliding_window
        {
            allowed = allowed.bool_and(diff.lower_elem(w as i64));
        }
        let mut allowed = allowed.unsqueeze_dim::<3>(0).expand([b, t, t]);
        if !self.ablation.no_packing_mask {
            let si = seq_ids.clone().unsqueeze_dim::<3>(2).expand([b, t, t]);
            let sj = seq_ids.unsqueeze_dim::<3>(1).expand([b, t, t]);
            allowed = allowed.bool_and(si.equal(sj));
        }
        allowed.bool_not()
    }

    /// Number of scalar parameters.
    pub fn param_count(&self) -> usize {
        self.num_params()
    }
}

/// A small deterministic generator for random weights (no dependency, same on every platform).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box-Muller.
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}
