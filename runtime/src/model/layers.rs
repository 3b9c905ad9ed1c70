//! One decoder block of the Llama family: RMSNorm, rotary GQA attention with a boolean mask,
//! SwiGLU MLP, and the residual connections (scaled for Granite).

use burn::module::{Module, Param};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Bool, Device, Tensor};

use super::loss::{to_dtype, to_f32};
use crate::config::ModelConfig;

/// RMSNorm as transformers computes it: `w * x / sqrt(mean(x^2) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    pub eps: f64,
}

impl RmsNorm {
    pub fn ones(size: usize, eps: f64, device: &Device) -> RmsNorm {
        RmsNorm {
            weight: Param::from_tensor(Tensor::ones([size], device)),
            eps,
        }
    }

    /// In fp32 whatever the input's dtype (transformers' `LlamaRMSNorm` upcasts too); the
    /// normalized value goes back to the input's dtype before the weight multiplies it.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = to_f32(x);
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x.div(variance.add_scalar(self.eps).sqrt());
        to_dtype(normed, dtype).mul(self.weight.val().unsqueeze())
    }
}

/// `x @ w (+ b)` with `w` in Burn's `[in, out]` layout.
fn linear(x: Tensor<3>, w: &Param<Tensor<2>>, b: &Option<Param<Tensor<1>>>) -> Tensor<3> {
    burn::tensor::module::linear(x, w.val(), b.as_ref().map(Param::val))
}

/// Self-attention with grouped key-value heads.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Param<Tensor<2>>,
    pub k_proj: Param<Tensor<2>>,
    pub v_proj: Param<Tensor<2>>,
    pub o_proj: Param<Tensor<2>>,
    pub q_bias: Option<Param<Tensor<1>>>,
    pub k_bias: Option<Param<Tensor<1>>>,
    pub v_bias: Option<Param<Tensor<1>>>,
    pub o_bias: Option<Param<Tensor<1>>>,
}

/// The rotate-half map transformers applies: `[x1, x2] -> [-x2, x1]` on the last axis.
pub fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

impl Attention {
    /// `x` `[B, T, hidden]`; `cos`/`sin` `[B, 1, T, head_dim]`; `mask` says which keys each
    /// query may attend to, and through which kernel.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &AttnMask,
        c: &ModelConfig,
        opts: AttnOpts,
    ) -> Tensor<3> {
        let scale = opts.scale;
        let [b, t, _] = x.dims();
        let (h, hkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, d]).swap_dims(1, 2);
        let q = heads(linear(x.clone(), &self.q_proj, &self.q_bias), h);
        let k = heads(linear(x.clone(), &self.k_proj, &self.k_bias), hkv);
        let v = heads(linear(x, &self.v_proj, &self.v_bias), hkv);
        let rope = |y: Tensor<4>| y.clone().mul(cos.clone()) + rotate_half(y).mul(sin.clone());
        let (q, k) = (rope(q), rope(k));
        #[allow(clippy::infallible_destructuring_match)] // one variant without feature `tch`
        let mask = match mask {
            AttnMask::Plain(mask) => mask,
            #[cfg(feature = "tch")]
            AttnMask::Fused { bias } => {
                let out = super::fused::attention(q, k, v, bias.as_ref(), scale);
                let out = out.swap_dims(1, 2).reshape([b, t, h * d]);
                return linear(out, &self.o_proj, &self.o_bias);
            }
        };
        let groups = h / hkv;
        let repeat = |y: Tensor<4>| {
            if groups == 1 {
                y
            } else if opts.tiled_kv_heads {
                // Ablation only: query head `h` reads kv head `h % hkv` (wrong for HF weights).
                y.repeat_dim(1, groups)
            } else {
                y.unsqueeze_dim::<5>(2)
                    .expand([b, hkv, groups, t, d])
                    .reshape([b, h, t, d])
            }
        };
        let (k, v) = (repeat(k), repeat(v));
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
        let scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        // fp32 softmax, back to the compute dtype (transformers' eager attention).
        let probs = to_dtype(softmax(to_f32(scores), 3), v.dtype());
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, t, h * d]);
        linear(out, &self.o_proj, &self.o_bias)
    }
}

/// Which keys each query may attend to, in the form its attention kernel takes.
#[derive(Debug, Clone)]
pub enum AttnMask {
    /// The decomposed path: `[B, H, T, T]`, true = forbidden.
    Plain(Tensor<4, Bool>),
    /// libtorch's fused kernel ([`super::fused`]): `None` = causal only; else an additive bias
    /// `[B, 1, T, T]` (0 allowed, −∞ forbidden) in the activations' dtype.
    #[cfg(feature = "tch")]
    Fused { bias: Option<Tensor<4>> },
}

impl AttnMask {
    /// The same mask on the autodiff flavour of its device.
    pub fn autodiff(&self) -> AttnMask {
        match self {
            AttnMask::Plain(m) => AttnMask::Plain(m.clone().autodiff()),
            #[cfg(feature = "tch")]
            AttnMask::Fused { bias } => AttnMask::Fused {
                bias: bias.as_ref().map(|b| b.clone().autodiff()),
            },
        }
    }
}

/// Per-call attention settings.
#[derive(Debug, Clone, Copy)]
pub struct AttnOpts {
    /// Multiplies `q.k` (Llama: `1/sqrt(head_dim)`, Granite: `attention_multiplier`).
    pub scale: f64,
    /// Ablation: map query heads to kv heads by tiling instead of transformers' grouping.
    pub tiled_kv_heads: bool,
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Param<Tensor<2>>,
    pub up_proj: Param<Tensor<2>>,
    pub down_proj: Param<Tensor<2>>,
    pub gate_bias: Option<Param<Tensor<1>>>,
    pub up_bias: Option<Param<Tensor<1>>>,
    pub down_bias: Option<Param<Tensor<1>>>,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(linear(x.clone(), &self.gate_proj, &self.gate_bias));
        let up = linear(x, &self.up_proj, &self.up_bias);
        linear(gate.mul(up), &self.down_proj, &self.down_bias)
    }
}

/// A pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: &AttnMask,
        c: &ModelConfig,
        opts: AttnOpts,
        residual_multiplier: f64,
    ) -> Tensor<3> {
        let scaled = |y: Tensor<3>| {
            if residual_multiplier == 1.0 {
                y
            } else {
                y.mul_scalar(residual_multiplier)
            }
        };
        let attn = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            mask,
            c,
            opts,
        );
        let x = x + scaled(attn);
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + scaled(mlp)
    }
}
