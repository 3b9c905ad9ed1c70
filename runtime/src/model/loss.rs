//! Token-level cross-entropy for causal LM training: per-token losses and their sum over the
//! tokens whose label is not [`IGNORE_INDEX`]. The caller divides by its own token count.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor};

/// The label of a token that carries no loss (transformers' `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// `x` in fp32: a cast for a bf16 model (mixed precision computes norms, softmax and the loss
/// in fp32, as transformers does), the tensor itself otherwise (no op in the graph).
pub fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

/// `x` cast back to `dtype` after an fp32 computation (no op when it already is `dtype`).
pub fn to_dtype<const D: usize>(x: Tensor<D>, dtype: DType) -> Tensor<D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// Transformers' causal shift for one row: the target of position `t` is `labels[t + 1]`, and
/// the last position gets [`IGNORE_INDEX`]. In a packed row, the first label of each sample must
/// already be `IGNORE_INDEX` so no sample predicts the next one's first token.
pub fn shift_labels(labels: &[i64]) -> Vec<i64> {
    labels
        .iter()
        .skip(1)
        .copied()
        .chain(std::iter::once(IGNORE_INDEX))
        .collect()
}

/// Per-token cross-entropy `[B, T]` of `logits` `[B, T, V]` against aligned `targets` `[B, T]`
/// (already shifted; [`IGNORE_INDEX`] gives 0).
pub fn token_losses(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, _] = logits.dims();
    let keep = targets.clone().not_equal_elem(IGNORE_INDEX);
    let safe = targets.mask_fill(keep.clone().bool_not(), 0);
    let logp = log_softmax(to_f32(logits), 2);
    let picked = logp.gather(2, safe.unsqueeze_dim::<3>(2)).reshape([b, t]);
    picked.neg().mul(keep.float())
}

/// The sum of [`token_losses`] over all tokens: a `[1]` tensor to call `backward` on after
/// dividing by the global count of loss tokens.
pub fn loss_sum(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    token_losses(logits, targets).sum()
}
