//! A tiny language model (embedding, position embedding, one hidden layer) that the training
//! loop's tests and benches train: small enough to run in milliseconds, real enough to have
//! gradients in every parameter. It looks at one token at a time, so packed samples never mix.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};

use crate::train::checkpoint::WeightsIo;
use crate::train::step::PackedLm;

/// The toy model.
#[derive(Module, Debug)]
pub struct ToyLm {
    embed: Embedding,
    position: Embedding,
    hidden: Linear,
    head: Linear,
}

/// File the toy model's weights go to inside a checkpoint (Burn's own format).
pub const TOY_WEIGHTS: &str = "toy.bpk";

impl ToyLm {
    /// A randomly initialised model; `device.seed(..)` before this makes it reproducible.
    pub fn new(vocab: usize, dim: usize, max_positions: usize, device: &Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(vocab, dim).init(device),
            position: EmbeddingConfig::new(max_positions, dim).init(device),
            hidden: LinearConfig::new(dim, dim).init(device),
            head: LinearConfig::new(dim, vocab).init(device),
        }
    }
}

impl PackedLm for ToyLm {
    fn forward_packed(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        _sample_lengths: &[usize],
    ) -> Tensor<3> {
        let x = self.embed.forward(tokens) + self.position.forward(positions);
        let h = self.hidden.forward(x).tanh();
        self.head.forward(h)
    }
}

/// Saves the toy model in Burn's own format; loads into a copy of `template`.
#[derive(Debug, Clone)]
pub struct ToyWeights {
    /// A model of the right shape (its values are replaced on load).
    pub template: ToyLm,
}

impl WeightsIo<ToyLm> for ToyWeights {
    fn save(&self, model: &ToyLm, dir: &Path) -> Result<(), String> {
        model
            .clone()
            .save_file(dir.join(TOY_WEIGHTS))
            .map_err(|e| format!("{e:?}"))
    }

    fn load(&self, dir: &Path) -> Result<ToyLm, String> {
        self.template
            .clone()
            .try_load_file(dir.join(TOY_WEIGHTS))
            .map_err(|e| format!("{e:?}"))
    }
}
