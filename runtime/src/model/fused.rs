//! Attention through libtorch's fused `scaled_dot_product_attention` (flash, memory-efficient
//! or its CPU kernels, libtorch's choice) as one Burn autodiff operation on the tch backend, so
//! the `[B, H, T, T]` scores and probabilities of the decomposed path are never kept for backward.
//!
//! How (route (b) of reference/gpu-scale.md §1): the forward detaches Burn's `q`, `k`, `v` into
//! fresh libtorch leaves that require a gradient, calls `scaled_dot_product_attention` under
//! libtorch's own autograd, hands Burn the detached output and keeps libtorch's graph in the
//! operation's state. The backward runs libtorch's backward of that graph from `sum(out * grad)`,
//! i.e. the fused kernels' own backward, and registers `dq`, `dk`, `dv` with Burn.
//!
//! Grouped-query attention: without a mask (every row one sample, no sliding window) the kernel
//! takes the kv heads as they are (`enable_gqa`, which flash supports); with a mask the kv heads
//! are repeated inside libtorch's graph first (the memory-efficient kernel takes a mask but not
//! GQA), so their gradients are summed back by libtorch.
//!
//! Aliasing: burn-tch reuses a tensor's buffer in place when it holds the only reference to it.
//! The state keeps Burn-side clones of the inputs and of the output, so Burn treats them as
//! shared (read-only) until this operation's backward has run, and libtorch's saved tensors are
//! never overwritten.
#![allow(deprecated)] // burn's LibTorch backend is deprecated in 0.22; see crate::backend.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::{DispatchDevice, GradientCheckpointingStrategy};
use burn::tensor::{Device, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether tensors on `device` are libtorch's (CPU or CUDA, with or without autodiff).
pub fn is_libtorch(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::LibTorch(_)
    )
}

/// `softmax(q kᵀ · scale + bias) v` with a causal mask when `bias` is `None`.
///
/// `q` `[B, H, T, D]`; `k`, `v` `[B, Hkv, T, D]` with `H` a multiple of `Hkv` (query head `h`
/// reads kv head `h / (H / Hkv)`, as transformers groups them); `bias` `[B, 1, T, T]`, additive
/// (0 where attention is allowed, −∞ where not), in `q`'s dtype. All on a libtorch device.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<&Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    let device = q.device();
    debug_assert!(
        is_libtorch(&device),
        "fused attention needs libtorch tensors"
    );
    if !device.is_autodiff() {
        let [q, k, v] = [q, k, v].map(|t| t.try_into_primitive::<LibTorch>().expect("libtorch"));
        let bias = bias.map(|b| {
            b.clone()
                .try_into_primitive::<LibTorch>()
                .expect("libtorch")
        });
        let out = tch::no_grad(|| sdpa(&q.tensor, &k.tensor, &v.tensor, bias.as_ref(), scale));
        return Tensor::from_primitive::<LibTorch>(TchTensor::new(out));
    }
    match device.gradient_checkpointing_strategy() {
        Some(GradientCheckpointingStrategy::Balanced) => {
            tracked!(BalancedCheckpointing, q, k, v, bias, scale)
        }
        _ => tracked!(NoCheckpointing, q, k, v, bias, scale),
    }
}

/// The op on an autodiff device with checkpoint strategy `$c` (a macro, not a generic: the
/// primitive conversion is implemented for each of Burn's two strategies by a private trait).
macro_rules! tracked {
    ($c:ty, $q:expr, $k:expr, $v:expr, $bias:expr, $scale:expr) => {{
        type Ad = Autodiff<LibTorch, $c>;
        let [q, k, v] = [$q, $k, $v].map(|t| {
            t.try_into_primitive::<Ad>()
                .expect("a libtorch autodiff tensor")
        });
        let bias = $bias.map(|b: &Tensor<4>| {
            b.clone()
                .try_into_primitive::<Ad>()
                .expect("a libtorch autodiff tensor")
                .into_primitive()
        });
        let out =
            match Backward::<LibTorch, 3>::prepare::<$c>(FusedSdpa, [q.node(), k.node(), v.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (state, out) = record(
                        [
                            q.primitive().clone(),
                            k.primitive().clone(),
                            v.primitive().clone(),
                        ],
                        bias.as_ref(),
                        $scale,
                    );
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => {
                    let (qt, kt, vt) = (
                        &q.primitive().tensor,
                        &k.primitive().tensor,
                        &v.primitive().tensor,
                    );
                    let out = tch::no_grad(|| sdpa(qt, kt, vt, bias.as_ref(), $scale));
                    prep.finish(TchTensor::new(out))
                }
            };
        Tensor::from_primitive::<Ad>(out)
    }};
}
use tracked;

/// The forward under libtorch's autograd: the state the backward needs and Burn's output.
fn record(inputs: [TchTensor; 3], bias: Option<&TchTensor>, scale: f64) -> (SdpaState, TchTensor) {
    let leaves = inputs
        .each_ref()
        .map(|t| t.tensor.detach().set_requires_grad(true));
    let graph_out = sdpa(&leaves[0], &leaves[1], &leaves[2], bias, scale);
    assert!(
        graph_out.requires_grad(),
        "libtorch's grad mode is off: the fused attention cannot record its backward"
    );
    let out = TchTensor::new(graph_out.detach());
    let state = SdpaState {
        inputs,
        leaves: leaves.map(TchTensor::new),
        graph_out: TchTensor::new(graph_out),
        out: out.clone(),
    };
    (state, out)
}

/// Logs, once per mask form, which kernel libtorch chose (`SDPBackend` in PyTorch's
/// `sdp_utils`), so a GPU run's log says whether it got flash, memory-efficient or the math
/// fallback.
fn log_choice(
    logged: &AtomicBool,
    form: &str,
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    bias: Option<&tch::Tensor>,
) {
    let causal = bias.is_none();
    let gqa = causal && q.size()[1] != k.size()[1];
    if logged.swap(true, Ordering::Relaxed) {
        return;
    }
    let choice = tch::Tensor::internal_fused_sdp_choice(q, k, v, bias, 0.0, causal, None, gqa);
    let name = match choice {
        0 => "math (decomposed inside libtorch)",
        1 => "flash",
        2 => "memory-efficient",
        3 => "cudnn",
        _ => "other",
    };
    tracing::info!(
        form,
        kernel = name,
        dtype = ?q.kind(),
        device = ?q.device(),
        "fused attention: libtorch's kernel"
    );
}

static LOGGED_CAUSAL: AtomicBool = AtomicBool::new(false);
static LOGGED_MASKED: AtomicBool = AtomicBool::new(false);

/// libtorch's `scaled_dot_product_attention`, causal without a bias; kv heads repeated to the
/// query heads when there is a bias (see the module docs).
fn sdpa(
    q: &tch::Tensor,
    k: &tch::Tensor,
    v: &tch::Tensor,
    bias: Option<&TchTensor>,
    scale: f64,
) -> tch::Tensor {
    let (h, hkv) = (q.size()[1], k.size()[1]);
    match bias {
        None => {
            log_choice(&LOGGED_CAUSAL, "causal", q, k, v, None);
            tch::Tensor::scaled_dot_product_attention(
                q,
                k,
                v,
                None::<&tch::Tensor>,
                0.0,
                true,
                scale,
                h != hkv,
            )
        }
        Some(bias) => {
            let repeat = |t: &tch::Tensor| {
                if h == hkv {
                    t.shallow_clone()
                } else {
                    t.repeat_interleave_self_int(h / hkv, 1, None)
                }
            };
            let (k, v) = (repeat(k), repeat(v));
            log_choice(&LOGGED_MASKED, "masked", q, &k, &v, Some(&bias.tensor));
            tch::Tensor::scaled_dot_product_attention(
                q,
                &k,
                &v,
                Some(&bias.tensor),
                0.0,
                false,
                scale,
                false,
            )
        }
    }
}

/// The Burn side of the operation: its backward runs libtorch's.
#[derive(Debug)]
struct FusedSdpa;

#[derive(Debug, Clone)]
struct SdpaState {
    /// Burn's `q`, `k`, `v`: held so Burn never writes into their buffers (see module docs).
    inputs: [TchTensor; 3],
    /// The libtorch leaves the graph was recorded from (same buffers as `inputs`).
    leaves: [TchTensor; 3],
    /// The output with its libtorch graph.
    graph_out: TchTensor,
    /// The output as Burn got it, held for the same reason as `inputs`.
    out: TchTensor,
}

impl Backward<LibTorch, 3> for FusedSdpa {
    type State = SdpaState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<LibTorch>(&ops.node);
        let SdpaState {
            inputs,
            leaves,
            graph_out,
            out,
        } = ops.state;
        let wanted: Vec<usize> = (0..3).filter(|&i| ops.parents[i].is_some()).collect();
        if wanted.is_empty() {
            return;
        }
        // d/d(leaves) of sum(out * grad) is the vector-Jacobian product with `grad`.
        let root = (&graph_out.tensor * &grad.tensor).sum(None::<tch::Kind>);
        let inputs_wanted: Vec<&tch::Tensor> = wanted.iter().map(|&i| &leaves[i].tensor).collect();
        let dx = tch::Tensor::run_backward(&[root], &inputs_wanted, false, false);
        drop((inputs, out));
        for (i, d) in wanted.into_iter().zip(dx) {
            let node = ops.parents[i].as_ref().expect("wanted parents are tracked");
            grads.register::<LibTorch>(node.id, TchTensor::new(d));
        }
    }
}
