//! The training loop's view of the Llama-family model: the packed forward it trains and the
//! Hugging Face weights a checkpoint holds (through `crate::weights`, fp32 so that a resumed
//! run continues bit for bit).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use burn::optim::GradientsParams;

use crate::model::{CausalLm, IGNORE_INDEX, LeanOptions, lean_loss_and_grads};
use crate::train::checkpoint::WeightsIo;
use crate::train::step::{IGNORE, MicroBatch, PackedLm, plain_loss_and_grads};
use crate::weights::{SaveDtype, load_model, save_model};

impl PackedLm for CausalLm {
    fn forward_packed(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        sample_lengths: &[usize],
    ) -> Tensor<3> {
        let device = tokens.device();
        let ids: Vec<i64> = sample_lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as i64, n))
            .collect();
        let t = ids.len();
        let seq_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        self.forward(tokens, positions, seq_ids)
    }

    fn loss_and_grads(
        &self,
        batch: &MicroBatch,
        denominator: f64,
        device: &Device,
        lean: LeanOptions,
    ) -> (f64, GradientsParams) {
        if lean.is_plain() {
            return plain_loss_and_grads(self, batch, denominator, device);
        }
        let t = batch.tokens.len();
        let ints = |v: &[u32]| {
            let v: Vec<i64> = v.iter().map(|&x| i64::from(x)).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, [1, t]), device)
        };
        let ids: Vec<i64> = batch
            .sample_lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as i64, n))
            .collect();
        let seq_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), device);
        let targets: Vec<i64> = batch
            .targets
            .iter()
            .map(|&x| {
                if x == IGNORE {
                    IGNORE_INDEX
                } else {
                    i64::from(x)
                }
            })
            .collect();
        lean_loss_and_grads(
            self,
            ints(&batch.tokens),
            ints(&batch.positions),
            seq_ids,
            &targets,
            1.0 / denominator,
            lean,
        )
    }
}

/// Checkpoint weights in Hugging Face layout (`model.safetensors`, `config.json`, tokenizer
/// files), so that every checkpoint is a model transformers and the evaluators can load.
#[derive(Debug, Clone)]
pub struct HfWeights {
    /// Where the tokenizer files come from (the run's base model directory).
    pub tokenizer_dir: PathBuf,
    /// The training device (autodiff).
    pub device: Device,
}

impl WeightsIo<CausalLm> for HfWeights {
    fn save(&self, model: &CausalLm, dir: &Path) -> Result<(), String> {
        save_model(model, dir, &self.tokenizer_dir, SaveDtype::F32).map_err(|e| e.to_string())
    }

    fn load(&self, dir: &Path) -> Result<CausalLm, String> {
        load_model(dir, &self.device).map_err(|e| e.to_string())
    }
}
