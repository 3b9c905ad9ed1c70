//! Memory-lean loss and gradients for one packed micro-batch: cross-entropy chunked over the
//! loss tokens (fp32 logits of the whole micro-batch never exist at once) and activation
//! checkpointing per decoder block (the forward keeps only each block's input; each block is
//! recomputed during the backward). Same loss and gradients as the plain graph, up to float
//! summation order. Backend-agnostic: it uses only Burn's public tensor API.
//!
//! How: the backward is run in stages. Each stage builds a small graph from fresh leaves, calls
//! `backward`, keeps the leaf's gradient and the parameters' gradients, and hands the leaf's
//! gradient `g` to the stage before it as the seed `(y * g).sum()`. Burn allows reusing a
//! parameter leaf across several backward calls (burn-tensor `Tensor::backward` docs), so every
//! stage adds into one [`GradientsAccumulator`].

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{AttnMask, AttnOpts, CausalLm, IGNORE_INDEX};

/// How the training step trades compute for memory. `LeanOptions::default()` is the plain graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeanOptions {
    /// Compute the LM head and cross-entropy over at most this many loss tokens at a time
    /// (prompt and padding tokens are skipped altogether). `None`: the whole micro-batch at once.
    pub ce_chunk_tokens: Option<usize>,
    /// Keep only each decoder block's input in the forward and recompute the block in backward.
    pub checkpoint_blocks: bool,
}

impl LeanOptions {
    /// Whether these options select the plain graph.
    pub fn is_plain(&self) -> bool {
        self.ce_chunk_tokens.is_none() && !self.checkpoint_blocks
    }
}

/// Summed token cross-entropy (`f64`) of one packed batch and the parameter gradients of
/// `scale * sum`. `tokens`, `positions`, `seq_ids` are `[B, T]` as [`CausalLm::forward`] takes
/// them; `targets` are the aligned (already shifted) labels, row-major `B * T`, with
/// [`IGNORE_INDEX`] where there is no loss. `model` must live on an autodiff device.
pub fn loss_and_grads(
    model: &CausalLm,
    tokens: Tensor<2, Int>,
    positions: Tensor<2, Int>,
    seq_ids: Tensor<2, Int>,
    targets: &[i64],
    scale: f64,
    opts: LeanOptions,
) -> (f64, GradientsParams) {
    let mut acc = GradientsAccumulator::<CausalLm>::new();
    let loss = if opts.checkpoint_blocks {
        checkpointed(
            model, tokens, positions, seq_ids, targets, scale, opts, &mut acc,
        )
    } else {
        let h = model.hidden_states(tokens, positions, seq_ids);
        let (loss, grads) = head(model, h, targets, scale, opts.ce_chunk_tokens, &mut acc);
        acc.accumulate(model, GradientsParams::from_grads(grads, model));
        loss
    };
    (loss, acc.grads())
}

/// The cross-entropy stage from the final hidden states `h` `[B, T, hidden]` (tracked). Returns
/// the summed loss and the `Gradients` of its last backward, which hold `h`'s ancestors'
/// gradients (the caller reads leaves out of it, then adds the parameters').
fn head(
    model: &CausalLm,
    h: Tensor<3>,
    targets: &[i64],
    scale: f64,
    chunk: Option<usize>,
    acc: &mut GradientsAccumulator<CausalLm>,
) -> (f64, burn::tensor::Gradients) {
    let [b, t, hidden] = h.dims();
    let n = b * t;
    assert_eq!(targets.len(), n, "one target per token");
    let device = h.device();
    let h = h.reshape([n, hidden]);
    let Some(chunk) = chunk else {
        let sum = ce_sum(model, h, targets, &device);
        let loss = f64::from(sum.clone().into_scalar::<f32>());
        return (loss, sum.mul_scalar(scale).backward());
    };
    let chunk = chunk.max(1);
    // Only rows with a loss token reach the LM head.
    let rows: Vec<i64> = (0..n as i64)
        .filter(|&i| targets[i as usize] != IGNORE_INDEX)
        .collect();
    let kept: Vec<i64> = rows.iter().map(|&i| targets[i as usize]).collect();
    if rows.is_empty() {
        // No loss token: a zero loss whose gradient is zero, through the same graph.
        let zero = h.sum().mul_scalar(0.0);
        return (0.0, zero.backward());
    }
    let m = rows.len();
    let index = Tensor::<1, Int>::from_data(TensorData::new(rows, [m]), &device);
    let selected = h.select(0, index); // [m, hidden], tracked
    let values = selected.clone().inner();
    let mut grad_rows: Vec<Tensor<2>> = Vec::with_capacity(m.div_ceil(chunk));
    let mut loss = 0.0f64;
    for start in (0..m).step_by(chunk) {
        let end = (start + chunk).min(m);
        let leaf = Tensor::<2>::from_inner(values.clone().slice(start..end)).require_grad();
        let sum = ce_sum(model, leaf.clone(), &kept[start..end], &device);
        loss += f64::from(sum.clone().into_scalar::<f32>());
        let mut grads = sum.mul_scalar(scale).backward();
        grad_rows.push(
            leaf.grad_remove(&mut grads)
                .expect("a chunk's hidden states take part in its loss"),
        );
        acc.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    let seed = Tensor::<2>::from_inner(Tensor::cat(grad_rows, 0));
    (loss, selected.mul(seed).sum().backward())
}

/// Summed cross-entropy of rows `h` `[n, hidden]` against `targets` (`n`, may hold
/// [`IGNORE_INDEX`]): LM head, log-softmax in fp32, gather.
fn ce_sum(model: &CausalLm, h: Tensor<2>, targets: &[i64], device: &Device) -> Tensor<1> {
    let n = targets.len();
    let logits = model.lm_logits(h.unsqueeze_dim::<3>(0));
    let vocab = logits.dims()[2];
    let logp = log_softmax(super::to_f32(logits.reshape([n, vocab])), 1);
    let safe: Vec<i64> = targets
        .iter()
        .map(|&x| if x == IGNORE_INDEX { 0 } else { x })
        .collect();
    let keep: Vec<f32> = targets
        .iter()
        .map(|&x| if x == IGNORE_INDEX { 0.0 } else { 1.0 })
        .collect();
    let index = Tensor::<2, Int>::from_data(TensorData::new(safe, [n, 1]), device);
    let keep = Tensor::<1>::from_data(TensorData::new(keep, [n]), device);
    logp.gather(1, index).reshape([n]).mul(keep).sum().neg()
}

/// The per-block inputs that the blocks' forward needs besides `x`.
struct BlockContext {
    cos: Tensor<4>,
    sin: Tensor<4>,
    mask: AttnMask,
    opts: AttnOpts,
    residual_multiplier: f64,
}

impl BlockContext {
    /// The same rotary tables, mask and multipliers as [`CausalLm::hidden_states`] uses.
    fn new(model: &CausalLm, positions: Tensor<2, Int>, seq_ids: Tensor<2, Int>) -> Self {
        let c = &model.config;
        let granite = !model.ablation.no_granite_multipliers;
        let [b, t] = positions.dims();
        let device = positions.device();
        let (cos, sin) = model.rotary(positions, &device);
        let mask = model.attention_mask(seq_ids, b, t, &device);
        let scale = if granite {
            c.attention_multiplier
        } else {
            1.0 / (c.head_dim as f64).sqrt()
        };
        BlockContext {
            cos,
            sin,
            mask,
            opts: AttnOpts {
                scale,
                tiled_kv_heads: model.ablation.tiled_kv_heads,
            },
            residual_multiplier: if granite { c.residual_multiplier } else { 1.0 },
        }
    }

    fn autodiff(&self) -> Self {
        BlockContext {
            cos: self.cos.clone().autodiff(),
            sin: self.sin.clone().autodiff(),
            mask: self.mask.autodiff(),
            opts: self.opts,
            residual_multiplier: self.residual_multiplier,
        }
    }
}

/// The embedding output (Granite's multiplier included).
fn embed(model: &CausalLm, tokens: Tensor<2, Int>) -> Tensor<3> {
    let x = burn::tensor::module::embedding(model.embed_tokens.val(), tokens);
    let m = model.config.embedding_multiplier;
    if !model.ablation.no_granite_multipliers && m != 1.0 {
        x.mul_scalar(m)
    } else {
        x
    }
}

#[allow(clippy::too_many_arguments)]
fn checkpointed(
    model: &CausalLm,
    tokens: Tensor<2, Int>,
    positions: Tensor<2, Int>,
    seq_ids: Tensor<2, Int>,
    targets: &[i64],
    scale: f64,
    opts: LeanOptions,
    acc: &mut GradientsAccumulator<CausalLm>,
) -> f64 {
    use burn::module::Module;
    // Forward without a graph, keeping only each block's input.
    let plain = model.valid();
    let ctx = BlockContext::new(&plain, positions.inner(), seq_ids.inner());
    let mut x = embed(&plain, tokens.clone().inner());
    let mut inputs = Vec::with_capacity(plain.layers.len());
    for layer in &plain.layers {
        inputs.push(x.clone());
        x = layer.forward(
            x,
            &ctx.cos,
            &ctx.sin,
            &ctx.mask,
            &plain.config,
            ctx.opts,
            ctx.residual_multiplier,
        );
    }
    drop(plain);

    // Head: final norm, LM head, cross-entropy.
    let last = Tensor::<3>::from_inner(x).require_grad();
    let h = model.norm.forward(last.clone());
    let (loss, mut grads) = head(model, h, targets, scale, opts.ce_chunk_tokens, acc);
    let mut seed = last
        .grad_remove(&mut grads)
        .expect("the last block's output takes part in the loss");
    acc.accumulate(model, GradientsParams::from_grads(grads, model));

    // Blocks, last to first: recompute with a graph, backward seeded by the output's gradient.
    let ctx = ctx.autodiff();
    for (layer, input) in model.layers.iter().zip(inputs).rev() {
        let leaf = Tensor::<3>::from_inner(input).require_grad();
        let y = layer.forward(
            leaf.clone(),
            &ctx.cos,
            &ctx.sin,
            &ctx.mask,
            &model.config,
            ctx.opts,
            ctx.residual_multiplier,
        );
        let mut grads = y.mul(Tensor::from_inner(seed)).sum().backward();
        seed = leaf
            .grad_remove(&mut grads)
            .expect("a block's input takes part in its output");
        acc.accumulate(model, GradientsParams::from_grads(grads, layer));
    }

    // Embedding.
    let x = embed(model, tokens);
    let grads = x.mul(Tensor::from_inner(seed)).sum().backward();
    acc.accumulate(model, GradientsParams::from_grads(grads, model));
    loss
}
