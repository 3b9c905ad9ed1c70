//! AdamW with the recipe's defaults, clipping by global gradient norm, and the stable parameter
//! identities that let optimizer state saved by one process be loaded by another.
//! Burn's own clipping is per tensor and is deliberately not used here.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// AdamW hyperparameters. The defaults are the recipe's (PyTorch's epsilon, no weight decay),
/// not Burn's (epsilon 1e-5, weight decay 1e-4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWSettings {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub epsilon: f64,
    /// Decoupled weight decay (multiplied by the learning rate, as in PyTorch's AdamW).
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            epsilon: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWSettings {
    /// The Burn optimizer for these settings, without Burn's per-tensor clipping.
    pub fn build(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.epsilon as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init()
    }
}

/// The global L2 norm of all gradients of `module`'s parameters (what the recipe logs).
///
/// Each tensor's sums of squares are taken on the device in f32 row by row (the last dimension),
/// the row sums are added in f64 on the host; one device read for the whole model.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct SquareSums<'a> {
        grads: &'a GradientsParams,
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SquareSums<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let squares = grad.square();
                // One f32 partial sum per row: a single f32 sum over a 500M-element embedding
                // gradient would lose several digits (3e-4 relative at 1M elements on flex).
                self.sums.push(if D >= 2 {
                    squares.sum_dim(D - 1).flatten::<1>(0, D - 1)
                } else {
                    squares.sum()
                });
            }
        }
    }
    let mut visitor = SquareSums {
        grads,
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return 0.0;
    }
    let sums = Tensor::cat(visitor.sums, 0).into_data();
    let total: f64 = sums.iter::<f32>().map(f64::from).sum();
    total.sqrt()
}

/// The factor PyTorch's `clip_grad_norm_` scales gradients by: `max_norm / (norm + 1e-6)`,
/// capped at 1.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Multiply every gradient of `module` by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: GradientsParams, factor: f64) -> GradientsParams {
    struct Scale {
        grads: GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads
                    .register::<D>(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    let mut visitor = Scale { grads, factor };
    module.visit(&mut visitor);
    visitor.grads
}

/// Clip `grads` to a global norm of `max_norm` (when given); returns the clipped gradients and
/// the norm before clipping.
pub fn clip_by_global_norm<M: Module>(
    module: &M,
    grads: GradientsParams,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let norm = global_grad_norm(module, &grads);
    match max_norm {
        Some(max) if norm.is_finite() && clip_factor(norm, max) < 1.0 => {
            (scale_grads(module, grads, clip_factor(norm, max)), norm)
        }
        _ => (grads, norm),
    }
}

/// One float parameter as the trainer identifies it: its module path, shape and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamEntry {
    /// Dotted module path, e.g. `layers.0.attn.q_proj.weight`.
    pub path: String,
    /// The tensor's dimensions.
    pub shape: Vec<usize>,
}

/// The float parameters of `module` in visiting order.
pub fn param_entries<M: Module>(module: &M) -> Vec<ParamEntry> {
    #[derive(Default)]
    struct Paths {
        stack: Vec<String>,
        out: Vec<ParamEntry>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push(ParamEntry {
                path: self.stack.join("."),
                shape: param.lazy_shape().to_vec(),
            });
        }
    }
    let mut visitor = Paths::default();
    module.visit(&mut visitor);
    visitor.out
}

/// Give every float parameter the id `1 + its index in visiting order`.
///
/// Burn keys optimizer state by [`ParamId`], and a model loaded from Hugging Face weights gets
/// fresh random ids; with stable ids the Adam moments saved by one process apply to the model
/// another process loads (the checkpoint also stores [`param_entries`] to check the structure).
pub fn with_stable_param_ids<M: Module>(module: M) -> M {
    struct Renumber {
        next: u64,
    }
    impl ModuleMapper for Renumber {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.next += 1;
            let (_, value, mapper) = param.consume();
            Param::from_mapped_value(ParamId::from(self.next), value, mapper)
        }
    }
    module.map(&mut Renumber { next: 0 })
}
