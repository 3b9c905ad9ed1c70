//! Mixed precision (spec key `[train] precision`): with `bf16` the model's `Param`s are bf16, so
//! the forward pass, the activations and the gradients are bf16, while the master weights and
//! AdamW's moments stay fp32 in the flat optimizer of `train/zero.rs` (ZeRO-1; with one rank it
//! is a flat fp32 AdamW). The model computes RMSNorm, softmax and the loss in fp32 itself
//! (`model::to_f32`); gradients reach the optimizer through the host as f32.
//!
//! Invariant: `fp32` (the default) changes nothing: no cast enters the graph and Burn's AdamW
//! stays the optimizer unless ZeRO-1 is asked for.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::train::step::{PackedLm, Trainer};

/// The compute precision of training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// bf16 parameters, activations and gradients; fp32 master weights, moments, norms, loss.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!("precision `{other}` is not one of `fp32`, `bf16`")),
        }
    }
}

impl Precision {
    /// The dtype of the model's parameters.
    pub fn dtype(self) -> DType {
        match self {
            Self::Fp32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// `module` with every float parameter cast to `dtype`, keeping its id, its autodiff settings
/// and whether it requires a gradient (a cast parameter is a fresh leaf, not a node of a graph).
pub fn cast_params<M: Module>(module: M, dtype: DType) -> M {
    struct Cast(DType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, tensor, mapper) = param.consume();
            if tensor.dtype() == self.0 {
                return Param::from_mapped_value(id, tensor, mapper);
            }
            let require_grad = tensor.is_require_grad();
            let mut value = if tensor.is_autodiff() {
                let strategy = tensor.gradient_checkpointing_strategy();
                let mut value = Tensor::from_inner(tensor.inner().cast(self.0));
                if let Some(strategy) = strategy {
                    value = value.with_gradient_checkpointing_strategy(strategy);
                }
                value
            } else {
                tensor.cast(self.0)
            };
            if require_grad {
                value = value.require_grad();
            }
            Param::from_mapped_value(id, value, mapper)
        }
    }
    module.map(&mut Cast(dtype))
}

/// Whether every float parameter of `module` is fp32.
pub fn is_fp32<M: Module>(module: &M) -> bool {
    struct AllF32(bool);
    impl ModuleVisitor for AllF32 {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 &= param.val().dtype() == DType::F32;
        }
    }
    let mut v = AllF32(true);
    module.visit(&mut v);
    v.0
}

/// `trainer` set up for `precision`. For `bf16`: the flat fp32 optimizer of `train/zero.rs`
/// (as rank `rank` of `world`; kept if the trainer already has one, e.g. after a resume), its
/// master weights taken from the model's current fp32 values, then the `Param`s cast to bf16.
/// Every rank of the job must do the same. `fp32` returns `trainer` as it is.
pub fn with_precision<M: PackedLm>(
    trainer: Trainer<M>,
    precision: Precision,
    rank: usize,
    world: usize,
) -> Trainer<M> {
    if precision == Precision::Fp32 {
        return trainer;
    }
    let mut trainer = if trainer.zero.is_none() {
        trainer.with_zero1(rank, world)
    } else {
        trainer
    };
    trainer.model = cast_params(trainer.model, precision.dtype());
    trainer
}
