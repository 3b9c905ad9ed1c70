//! The tiny-model maker: a small random model of each architecture in Hugging Face layout, with
//! a real tokenizer beside it, for the quickstart and the tests. Nothing is downloaded.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::config::{Arch, ModelConfig, RopeScaling};
use crate::model::CausalLm;
use crate::weights::{self, SaveDtype, WeightsError};

/// Errors making a tiny model.
#[derive(Debug, thiserror::Error)]
pub enum TinyError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("cannot read `{path}`: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("writing the tiny tokenizer: {0}")]
    TinyTokenizer(#[from] sftctl_data::DataError),
}

/// Where a tiny model's tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// The project's tiny byte-level BPE (`sftctl_data::tokenizer::write_tiny_tokenizer`) with
    /// the architecture's special tokens and chat template: Llama 3's for Llama and Mistral,
    /// Granite's for Granite.
    Tiny,
    /// Copy the tokenizer files of this directory.
    Dir(PathBuf),
}

/// The configuration of the tiny model of `arch` for a tokenizer of `vocab_size` ids: 2 layers,
/// hidden 64, 4 query heads over 2 key-value heads, and each architecture's own features
/// (llama3 rope scaling and tied embeddings, a sliding window, Granite's multipliers).
pub fn tiny_config(arch: Arch, vocab_size: usize) -> ModelConfig {
    let mut c = ModelConfig {
        arch,
        vocab_size,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 2048,
        tie_word_embeddings: false,
        attention_bias: false,
        mlp_bias: false,
        sliding_window: None,
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        attention_multiplier: 1.0 / 4.0,
        logits_scaling: 1.0,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
    };
    match arch {
        Arch::Llama => {
            c.rope_theta = 500000.0;
            c.rope_scaling = RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 256,
            };
            c.tie_word_embeddings = true;
        }
        Arch::Mistral => c.sliding_window = Some(256),
        Arch::Granite => {
            c.embedding_multiplier = 12.0;
            c.residual_multiplier = 0.22;
            c.attention_multiplier = 1.0 / 16.0;
            c.logits_scaling = 8.0;
        }
    }
    c
}

/// The number of ids of a `tokenizer.json` (model vocabulary plus added tokens) and the ids of
/// `bos`/`eos`/`pad` found among its added tokens.
fn tokenizer_vocab(path: &Path) -> Result<(usize, Vec<(String, u64)>), TinyError> {
    let err = |message: String| TinyError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let text = fs_err::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut max_id = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| err("no `model.vocab` object".into()))?
        .values()
        .filter_map(serde_json::Value::as_u64)
        .max()
        .unwrap_or(0);
    let mut added = Vec::new();
    for t in v["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) {
            max_id = max_id.max(id);
            added.push((content.to_string(), id));
        }
    }
    Ok((max_id as usize + 1, added))
}

/// Writes a random tiny model of `arch` to `out` with its tokenizer (whose vocabulary fixes the
/// model's). Returns the config written.
pub fn make_tiny_model(
    arch: Arch,
    out: &Path,
    tokenizer: &TokenizerSource,
    seed: u64,
    device: &Device,
) -> Result<ModelConfig, TinyError> {
    let tokenizer_dir = match tokenizer {
        TokenizerSource::Tiny => {
            let flavor = match arch {
                Arch::Llama | Arch::Mistral => sftctl_data::tokenizer::Flavor::Llama3,
                Arch::Granite => sftctl_data::tokenizer::Flavor::Granite,
            };
            sftctl_data::tokenizer::write_tiny_tokenizer(out, flavor)?;
            out.to_path_buf()
        }
        TokenizerSource::Dir(dir) => dir.clone(),
    };
    let tok = weights::require_tokenizer(&tokenizer_dir)?;
    let (vocab, added) = tokenizer_vocab(&tok)?;
    let mut config = tiny_config(arch, vocab);
    let id_of = |names: &[&str]| {
        added
            .iter()
            .find(|(c, _)| names.contains(&c.as_str()))
            .map(|(_, id)| serde_json::Value::from(*id))
    };
    config.bos_token_id = id_of(&["<|begin_of_text|>", "<s>"]);
    config.eos_token_id = id_of(&["<|eot_id|>", "<|end_of_text|>", "</s>"]);
    config.pad_token_id = id_of(&["<|finetune_right_pad_id|>", "<pad>", "<|end_of_text|>"]);
    if arch == Arch::Granite {
        config.bos_token_id = id_of(&["<|end_of_text|>"]);
    }
    let model = CausalLm::random(&config, device, seed);
    weights::save_model(&model, out, &tokenizer_dir, SaveDtype::F32)?;
    Ok(config)
}
