//! Hugging Face checkpoints on disk: reading safetensors weights (one file or sharded through
//! `model.safetensors.index.json`, bf16/fp16/fp32) into a [`CausalLm`], and writing a model back
//! as a directory transformers loads as is (safetensors, `config.json`, tokenizer files).
//! Every tensor is accounted for: a missing or unused name is an error listing them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::config::{ConfigError, ModelConfig};
use crate::model::{Ablation, Attention, Block, CausalLm, Mlp, RmsNorm};

/// The single-file weights name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The shard index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Tokenizer files copied next to a saved model when present (`tokenizer.json` is required).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// Errors reading or writing a checkpoint directory.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid safetensors file (truncated or corrupt?): {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("`{path}`: invalid shard index: {message}")]
    BadIndex { path: PathBuf, message: String },
    #[error("no weights in `{dir}`: expected `{WEIGHTS_FILE}` or `{INDEX_FILE}`")]
    NoWeights { dir: PathBuf },
    #[error("`{path}`: tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("`{path}`: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("`{path}`: tensor `{name}` appears in more than one shard")]
    Duplicate { path: PathBuf, name: String },
    #[error(
        "weights in `{dir}` do not match the config: missing [{}], unused [{}]",
        missing.join(", "),
        unused.join(", ")
    )]
    Mismatch {
        dir: PathBuf,
        missing: Vec<String>,
        unused: Vec<String>,
    },
    #[error("missing tokenizer: `{path}` does not exist")]
    NoTokenizer { path: PathBuf },
    #[error("cannot write `{path}`: {message}")]
    Write { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One tensor read from disk, converted to f32.
struct RawTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
    file: PathBuf,
}

/// The safetensors files of a checkpoint directory, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let text = fs_err::read_to_string(&index).map_err(io(&index))?;
        let bad = |message: String| WeightsError::BadIndex {
            path: index.clone(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut files = BTreeSet::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("`{name}` maps to a non-string")))?;
            if file.contains('/') || file.contains("..") {
                return Err(bad(format!("shard name `{file}` is not a plain file name")));
            }
            files.insert(file.to_string());
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(WEIGHTS_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(WeightsError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

fn read_tensors(files: &[PathBuf]) -> Result<BTreeMap<String, RawTensor>, WeightsError> {
    let mut out = BTreeMap::new();
    for path in files {
        let bytes = fs_err::read(path).map_err(io(path))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for (name, view) in st.iter() {
            let data = to_f32(view.dtype(), view.data()).ok_or_else(|| WeightsError::Dtype {
                path: path.clone(),
                name: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let raw = RawTensor {
                shape: view.shape().to_vec(),
                data,
                file: path.clone(),
            };
            if out.insert(name.to_string(), raw).is_some() {
                return Err(WeightsError::Duplicate {
                    path: path.clone(),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let words2 = || {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::BF16 => Some(
            words2()
                .map(|w| half::bf16::from_bits(w).to_f32())
                .collect(),
        ),
        Dtype::F16 => Some(words2().map(|w| half::f16::from_bits(w).to_f32()).collect()),
        _ => None,
    }
}

/// The on-disk dtype of saved weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    #[default]
    F32,
    Bf16,
}

impl SaveDtype {
    fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
        }
    }
}

/// Hands out tensors by Hugging Face name, checking shapes and recording what was taken.
struct Taker<'a> {
    tensors: BTreeMap<String, RawTensor>,
    device: &'a Device,
    missing: Vec<String>,
    first_error: Option<WeightsError>,
}

impl Taker<'_> {
    fn raw(&mut self, name: &str, expected: &[usize]) -> Option<Vec<f32>> {
        let Some(raw) = self.tensors.remove(name) else {
            self.missing.push(name.to_string());
            return None;
        };
        if raw.shape != expected {
            self.first_error.get_or_insert(WeightsError::Shape {
                path: raw.file,
                name: name.to_string(),
                found: raw.shape,
                expected: expected.to_vec(),
            });
            return None;
        }
        Some(raw.data)
    }

    // A tensor that is missing or misshapen is replaced by a one-element placeholder: the load
    // fails anyway once every name was looked at, and a placeholder of the configured size
    // would let a forged `config.json` (sizes up to 2^24 each) allocate up to 2^48 floats.

    /// A vector parameter `[n]`.
    fn vector(&mut self, name: &str, n: usize) -> Param<Tensor<1>> {
        let (data, n) = match self.raw(name, &[n]) {
            Some(data) => (data, n),
            None => (vec![0.0], 1),
        };
        Param::from_tensor(Tensor::from_data(TensorData::new(data, [n]), self.device))
    }

    /// A matrix stored as-is, `[rows, cols]`.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Param<Tensor<2>> {
        let (data, shape) = match self.raw(name, &[rows, cols]) {
            Some(data) => (data, [rows, cols]),
            None => (vec![0.0], [1, 1]),
        };
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    /// An HF linear weight `[out, in]`, stored transposed as Burn's `[in, out]`.
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> Param<Tensor<2>> {
        let (data, shape) = match self.raw(name, &[d_out, d_in]) {
            Some(data) => (transpose(&data, d_out, d_in), [d_in, d_out]),
            None => (vec![0.0], [1, 1]),
        };
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), self.device))
    }

    fn bias(&mut self, name: &str, n: usize, on: bool) -> Option<Param<Tensor<1>>> {
        on.then(|| self.vector(name, n))
    }
}

/// `rows x cols` row-major to `cols x rows` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Names transformers itself ignores when loading (buffers some old checkpoints carry).
fn ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Loads `config.json` and the safetensors weights of `dir` onto `device` (fp32).
pub fn load_model(dir: &Path, device: &Device) -> Result<CausalLm, WeightsError> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    load_weights(dir, config, device)
}

/// Loads the weights of `dir` for an already parsed `config`.
pub fn load_weights(
    dir: &Path,
    config: ModelConfig,
    device: &Device,
) -> Result<CausalLm, WeightsError> {
    let files = weight_files(dir)?;
    let tensors = read_tensors(&files)?;
    let mut t = Taker {
        tensors,
        device,
        missing: Vec::new(),
        first_error: None,
    };
    let c = &config;
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let embed_tokens = t.matrix("model.embed_tokens.weight", c.vocab_size, h);
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let ab = c.attention_bias;
        let mb = c.mlp_bias;
        layers.push(Block {
            input_layernorm: RmsNorm {
                weight: t.vector(&format!("{p}.input_layernorm.weight"), h),
                eps: c.rms_norm_eps,
            },
            self_attn: Attention {
                q_proj: t.linear(&format!("{p}.self_attn.q_proj.weight"), h, q),
                k_proj: t.linear(&format!("{p}.self_attn.k_proj.weight"), h, kv),
                v_proj: t.linear(&format!("{p}.self_attn.v_proj.weight"), h, kv),
                o_proj: t.linear(&format!("{p}.self_attn.o_proj.weight"), q, h),
                q_bias: t.bias(&format!("{p}.self_attn.q_proj.bias"), q, ab),
                k_bias: t.bias(&format!("{p}.self_attn.k_proj.bias"), kv, ab),
                v_bias: t.bias(&format!("{p}.self_attn.v_proj.bias"), kv, ab),
                o_bias: t.bias(&format!("{p}.self_attn.o_proj.bias"), h, ab),
            },
            post_attention_layernorm: RmsNorm {
                weight: t.vector(&format!("{p}.post_attention_layernorm.weight"), h),
                eps: c.rms_norm_eps,
            },
            mlp: Mlp {
                gate_proj: t.linear(&format!("{p}.mlp.gate_proj.weight"), h, i),
                up_proj: t.linear(&format!("{p}.mlp.up_proj.weight"), h, i),
                down_proj: t.linear(&format!("{p}.mlp.down_proj.weight"), i, h),
                gate_bias: t.bias(&format!("{p}.mlp.gate_proj.bias"), i, mb),
                up_bias: t.bias(&format!("{p}.mlp.up_proj.bias"), i, mb),
                down_bias: t.bias(&format!("{p}.mlp.down_proj.bias"), h, mb),
            },
        });
    }
    let norm = RmsNorm {
        weight: t.vector("model.norm.weight", h),
        eps: c.rms_norm_eps,
    };
    let lm_head = if c.tie_word_embeddings {
        // Some tied checkpoints also store the (identical) head; transformers ignores it.
        t.tensors.remove("lm_head.weight");
        None
    } else {
        Some(t.linear("lm_head.weight", h, c.vocab_size))
    };
    if let Some(e) = t.first_error {
        return Err(e);
    }
    let unused: Vec<String> = t
        .tensors
        .keys()
        .filter(|n| !ignorable(n))
        .cloned()
        .collect();
    if !t.missing.is_empty() || !unused.is_empty() {
        return Err(WeightsError::Mismatch {
            dir: dir.to_path_buf(),
            missing: t.missing,
            unused,
        });
    }
    Ok(CausalLm {
        embed_tokens,
        layers,
        norm,
        lm_head,
        config,
        ablation: Ablation::default(),
        attention: crate::model::AttentionKernel::default(),
    })
}

/// A parameter as Hugging Face names and lays it out.
#[derive(Debug, Clone, Copy)]
pub enum HfParam<'a> {
    /// Stored as is (the embedding).
    Matrix(&'a Param<Tensor<2>>),
    /// A linear weight: Burn `[in, out]`, Hugging Face `[out, in]`.
    Linear(&'a Param<Tensor<2>>),
    /// A bias or norm weight.
    Vector(&'a Param<Tensor<1>>),
}

/// Every parameter of `model` with its Hugging Face name, in checkpoint order.
pub fn hf_params(model: &CausalLm) -> Vec<(String, HfParam<'_>)> {
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        HfParam::Matrix(&model.embed_tokens),
    )];
    for (l, b) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{l}");
        out.push((
            format!("{p}.input_layernorm.weight"),
            HfParam::Vector(&b.input_layernorm.weight),
        ));
        let a = &b.self_attn;
        for (n, w, bias) in [
            ("q_proj", &a.q_proj, &a.q_bias),
            ("k_proj", &a.k_proj, &a.k_bias),
            ("v_proj", &a.v_proj, &a.v_bias),
            ("o_proj", &a.o_proj, &a.o_bias),
        ] {
            out.push((format!("{p}.self_attn.{n}.weight"), HfParam::Linear(w)));
            if let Some(bias) = bias {
                out.push((format!("{p}.self_attn.{n}.bias"), HfParam::Vector(bias)));
            }
        }
        out.push((
            format!("{p}.post_attention_layernorm.weight"),
            HfParam::Vector(&b.post_attention_layernorm.weight),
        ));
        let m = &b.mlp;
        for (n, w, bias) in [
            ("gate_proj", &m.gate_proj, &m.gate_bias),
            ("up_proj", &m.up_proj, &m.up_bias),
            ("down_proj", &m.down_proj, &m.down_bias),
        ] {
            out.push((format!("{p}.mlp.{n}.weight"), HfParam::Linear(w)));
            if let Some(bias) = bias {
                out.push((format!("{p}.mlp.{n}.bias"), HfParam::Vector(bias)));
            }
        }
    }
    out.push((
        "model.norm.weight".to_string(),
        HfParam::Vector(&model.norm.weight),
    ));
    if let Some(head) = &model.lm_head {
        out.push(("lm_head.weight".to_string(), HfParam::Linear(head)));
    }
    out
}

/// A host copy in Hugging Face layout: name, shape, row-major f32 values.
pub type HostTensor = (String, Vec<usize>, Vec<f32>);

fn host<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data");
    (shape, data)
}

fn hf_layout(name: String, linear: bool, (shape, data): (Vec<usize>, Vec<f32>)) -> HostTensor {
    if linear {
        let t = transpose(&data, shape[0], shape[1]);
        (name, vec![shape[1], shape[0]], t)
    } else {
        (name, shape, data)
    }
}

/// Every parameter value in Hugging Face names and layout.
pub fn hf_tensors(model: &CausalLm) -> Vec<HostTensor> {
    hf_params(model)
        .into_iter()
        .map(|(name, p)| match p {
            HfParam::Matrix(w) => hf_layout(name, false, host(w.val())),
            HfParam::Linear(w) => hf_layout(name, true, host(w.val())),
            HfParam::Vector(w) => hf_layout(name, false, host(w.val())),
        })
        .collect()
}

/// The gradient of every parameter after `loss.backward()`, in Hugging Face names and layout;
/// a parameter without a gradient is left out.
pub fn hf_gradients(model: &CausalLm, grads: &burn::tensor::Gradients) -> Vec<HostTensor> {
    hf_params(model)
        .into_iter()
        .filter_map(|(name, p)| match p {
            HfParam::Matrix(w) => w.val().grad(grads).map(|g| hf_layout(name, false, host(g))),
            HfParam::Linear(w) => w.val().grad(grads).map(|g| hf_layout(name, true, host(g))),
            HfParam::Vector(w) => w.val().grad(grads).map(|g| hf_layout(name, false, host(g))),
        })
        .collect()
}

/// Checks that `dir` holds a `tokenizer.json`.
pub fn require_tokenizer(dir: &Path) -> Result<PathBuf, WeightsError> {
    let path = dir.join("tokenizer.json");
    if path.is_file() {
        Ok(path)
    } else {
        Err(WeightsError::NoTokenizer { path })
    }
}

/// Writes `model` to `out` in Hugging Face layout: `model.safetensors`, `config.json`, and the
/// tokenizer files of `tokenizer_dir` (which must hold at least `tokenizer.json`).
pub fn save_model(
    model: &CausalLm,
    out: &Path,
    tokenizer_dir: &Path,
    dtype: SaveDtype,
) -> Result<(), WeightsError> {
    require_tokenizer(tokenizer_dir)?;
    fs_err::create_dir_all(out).map_err(io(out))?;
    let tensors = hf_tensors(model);
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            let bytes = match dtype {
                SaveDtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                SaveDtype::Bf16 => data
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes())
                    .collect(),
            };
            (name, shape, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::Bf16 => Dtype::BF16,
    };
    let path = out.join(WEIGHTS_FILE);
    let write_err = |message: String| WeightsError::Write {
        path: path.clone(),
        message,
    };
    let mut views = Vec::with_capacity(encoded.len());
    for (name, shape, bytes) in &encoded {
        let view = safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes)
            .map_err(|e| write_err(e.to_string()))?;
        views.push((name.clone(), view));
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| write_err(e.to_string()))?;
    fs_err::write(&path, bytes).map_err(io(&path))?;
    // A stale shard index next to the new single file would make loaders read the old shards.
    let stale = out.join(INDEX_FILE);
    if stale.exists() {
        fs_err::remove_file(&stale).map_err(io(&stale))?;
    }

    let mut config = model.config.to_hf_json();
    config["torch_dtype"] = dtype.torch_name().into();
    config["dtype"] = dtype.torch_name().into();
    let config_path = out.join("config.json");
    let text = serde_json::to_string_pretty(&config).expect("a JSON value prints") + "\n";
    fs_err::write(&config_path, text).map_err(io(&config_path))?;

    if tokenizer_dir != out {
        for name in TOKENIZER_FILES {
            let from = tokenizer_dir.join(name);
            if from.is_file() {
                let to = out.join(name);
                fs_err::copy(&from, &to).map_err(io(&to))?;
            }
        }
    }
    Ok(())
}
