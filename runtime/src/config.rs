//! Hugging Face `config.json` for the supported causal LMs (Llama, Mistral, Granite): parsing,
//! validation and writing back. Only this module knows the JSON field names; the model reads the
//! checked [`ModelConfig`]. Anything it cannot honour is an error naming the file, never a guess.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The architectures the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arch {
    /// `LlamaForCausalLM` (Llama 2/3.x).
    Llama,
    /// `MistralForCausalLM`: Llama with an optional sliding attention window, no biases.
    Mistral,
    /// `GraniteForCausalLM`: Llama with embedding, residual, attention and logit multipliers.
    Granite,
}

impl Arch {
    /// The `architectures[0]` string transformers writes.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Granite => "GraniteForCausalLM",
        }
    }

    /// The `model_type` string transformers writes.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Granite => "granite",
        }
    }

    /// Parses a command-line name (`llama`, `mistral`, `granite`).
    pub fn from_name(name: &str) -> Option<Arch> {
        [Arch::Llama, Arch::Mistral, Arch::Granite]
            .into_iter()
            .find(|a| a.model_type() == name || a.hf_class() == name)
    }
}

/// How rotary frequencies are derived from `rope_theta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"` or no scaling block).
    None,
    /// Llama 3.1 frequency smoothing (`rope_type: "llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// A checked model configuration: everything the forward pass depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Mistral: each token attends to at most this many tokens (itself included).
    pub sliding_window: Option<usize>,
    /// Granite multipliers; 1.0 (or `1/sqrt(head_dim)` for attention) elsewhere.
    pub embedding_multiplier: f64,
    pub residual_multiplier: f64,
    pub attention_multiplier: f64,
    pub logits_scaling: f64,
    /// Token ids carried through to the saved config (not used by the forward pass).
    pub bos_token_id: Option<Value>,
    pub eos_token_id: Option<Value>,
    pub pad_token_id: Option<Value>,
}

/// Errors reading or checking a `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{path}`: missing field `{field}`")]
    Missing { path: PathBuf, field: String },
    #[error("`{path}`: field `{field}` has value `{value}`, expected {expected}")]
    BadValue {
        path: PathBuf,
        field: String,
        value: String,
        expected: String,
    },
    #[error(
        "`{path}`: unsupported architecture `{arch}` (supported: LlamaForCausalLM, MistralForCausalLM, GraniteForCausalLM)"
    )]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error("`{path}`: `{field}` = `{value}` is not supported by this runtime")]
    Unsupported {
        path: PathBuf,
        field: String,
        value: String,
    },
}

/// Reads one field of a JSON object with the file's path for errors.
struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn bad(&self, field: &str, value: &Value, expected: &str) -> ConfigError {
        ConfigError::BadValue {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn missing(&self, field: &str) -> ConfigError {
        ConfigError::Missing {
            path: self.path.to_path_buf(),
            field: field.to_string(),
        }
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            // Bounded: sizes multiply into allocations and tensor shapes, so a forged
            // `config.json` must be an error here, not an overflow or a huge allocation later.
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0 && *n <= MAX_CONFIG_INT)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.bad(field, v, "a positive integer up to 2^24")),
        }
    }

    fn usize(&self, field: &str) -> Result<usize, ConfigError> {
        self.opt_usize(field)?.ok_or_else(|| self.missing(field))
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.bad(field, v, "a finite number")),
        }
    }

    fn f64(&self, field: &str) -> Result<f64, ConfigError> {
        self.opt_f64(field)?.ok_or_else(|| self.missing(field))
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(field, v, "true or false")),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&str>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(field, v, "a string")),
        }
    }
}

/// Largest integer a `config.json` size may hold (vocabularies, widths, positions).
const MAX_CONFIG_INT: u64 = 1 << 24;
/// Most layers a config may ask for (every layer is built before its weights are checked).
const MAX_LAYERS: usize = 4096;

impl ModelConfig {
    /// Reads and checks `config.json` (a file, or a directory holding one).
    pub fn from_file(path: &Path) -> Result<ModelConfig, ConfigError> {
        let path = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = fs_err::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_json_str(&text, &path)
    }

    /// Parses a `config.json` text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<ModelConfig, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let Some(obj) = value.as_object() else {
            return Err(ConfigError::BadValue {
                path: path.to_path_buf(),
                field: "(top level)".into(),
                value: value.to_string(),
                expected: "a JSON object".into(),
            });
        };
        Self::from_map(obj, path)
    }

    fn from_map(obj: &Map<String, Value>, path: &Path) -> Result<ModelConfig, ConfigError> {
        let f = Fields { path, obj };
        let arch = match f.get("architectures") {
            Some(Value::Array(list)) => {
                let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                match names.as_slice() {
                    [one] => Arch::from_name(one).ok_or_else(|| ConfigError::UnsupportedArch {
                        path: path.to_path_buf(),
                        arch: (*one).to_string(),
                    })?,
                    _ => {
                        return Err(f.bad(
                            "architectures",
                            f.get("architectures").unwrap_or(&Value::Null),
                            "exactly one architecture name",
                        ));
                    }
                }
            }
            Some(v) => return Err(f.bad("architectures", v, "a list of strings")),
            None => {
                let model_type = f
                    .opt_str("model_type")?
                    .ok_or_else(|| f.missing("architectures"))?;
                Arch::from_name(model_type).ok_or_else(|| ConfigError::UnsupportedArch {
                    path: path.to_path_buf(),
                    arch: model_type.to_string(),
                })?
            }
        };
        if let Some(model_type) = f.opt_str("model_type")?
            && model_type != arch.model_type()
        {
            return Err(ConfigError::BadValue {
                path: path.to_path_buf(),
                field: "model_type".into(),
                value: model_type.into(),
                expected: format!("`{}` for {}", arch.model_type(), arch.hf_class()),
            });
        }

        let hidden_act = f.opt_str("hidden_act")?.unwrap_or("silu");
        if hidden_act != "silu" {
            return Err(unsupported(path, "hidden_act", hidden_act));
        }
        if let Some(tp) = f.opt_usize("pretraining_tp")?
            && tp != 1
        {
            return Err(unsupported(path, "pretraining_tp", &tp.to_string()));
        }

        let hidden_size = f.usize("hidden_size")?;
        let num_attention_heads = f.usize("num_attention_heads")?;
        let num_key_value_heads = f
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(f.bad(
                "num_key_value_heads",
                &Value::from(num_key_value_heads),
                &format!("a divisor of num_attention_heads ({num_attention_heads})"),
            ));
        }
        let head_dim = match f.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(f.bad(
                        "hidden_size",
                        &Value::from(hidden_size),
                        "a multiple of num_attention_heads when head_dim is not given",
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(f.bad("head_dim", &Value::from(head_dim), "an even number"));
        }

        let (rope_theta, rope_scaling) = parse_rope(&f, path)?;
        let max_position_embeddings = f.opt_usize("max_position_embeddings")?.unwrap_or(2048);

        let granite = arch == Arch::Granite;
        let multiplier = |field: &str, default: f64| -> Result<f64, ConfigError> {
            if granite {
                f.f64(field)
            } else {
                match f.opt_f64(field)? {
                    Some(x) if x != default => Err(unsupported(path, field, &x.to_string())),
                    _ => Ok(default),
                }
            }
        };
        let embedding_multiplier = multiplier("embedding_multiplier", 1.0)?;
        let residual_multiplier = multiplier("residual_multiplier", 1.0)?;
        let logits_scaling = multiplier("logits_scaling", 1.0)?;
        let attention_multiplier = if granite {
            f.f64("attention_multiplier")?
        } else {
            if let Some(x) = f.opt_f64("attention_multiplier")? {
                return Err(unsupported(path, "attention_multiplier", &x.to_string()));
            }
            1.0 / (head_dim as f64).sqrt()
        };

        let sliding_window = match arch {
            Arch::Mistral => f.opt_usize("sliding_window")?,
            _ => {
                // Llama/Granite configs do not use a window; a non-null one would be ignored by
                // transformers too, but it signals a config we do not understand.
                if let Some(w) = f.opt_usize("sliding_window")? {
                    return Err(unsupported(path, "sliding_window", &w.to_string()));
                }
                None
            }
        };
        if let Some(true) = f.opt_bool("use_sliding_window")? {
            return Err(unsupported(path, "use_sliding_window", "true"));
        }

        let (attention_bias, mlp_bias) = match arch {
            Arch::Mistral => {
                for field in ["attention_bias", "mlp_bias"] {
                    if let Some(true) = f.opt_bool(field)? {
                        return Err(unsupported(path, field, "true"));
                    }
                }
                (false, false)
            }
            _ => (
                f.opt_bool("attention_bias")?.unwrap_or(false),
                f.opt_bool("mlp_bias")?.unwrap_or(false),
            ),
        };

        Ok(ModelConfig {
            arch,
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: match f.usize("num_hidden_layers")? {
                n if n > MAX_LAYERS => {
                    return Err(f.bad("num_hidden_layers", &Value::from(n), "at most 4096"));
                }
                n => n,
            },
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: f.f64("rms_norm_eps")?,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias,
            mlp_bias,
            sliding_window,
            embedding_multiplier,
            residual_multiplier,
            attention_multiplier,
            logits_scaling,
            bos_token_id: f.get("bos_token_id").cloned(),
            eos_token_id: f.get("eos_token_id").cloned(),
            pad_token_id: f.get("pad_token_id").cloned(),
        })
    }

    /// The `config.json` transformers reads back as the same model (current `rope_parameters`
    /// layout, which transformers 4.x also accepts through `rope_theta`/`rope_scaling`).
    pub fn to_hf_json(&self) -> Value {
        let mut rope = Map::new();
        rope.insert("rope_theta".into(), self.rope_theta.into());
        match self.rope_scaling {
            RopeScaling::None => {
                rope.insert("rope_type".into(), "default".into());
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                rope.insert("rope_type".into(), "llama3".into());
                rope.insert("factor".into(), factor.into());
                rope.insert("low_freq_factor".into(), low_freq_factor.into());
                rope.insert("high_freq_factor".into(), high_freq_factor.into());
                rope.insert(
                    "original_max_position_embeddings".into(),
                    original_max_position_embeddings.into(),
                );
            }
        }
        let mut m = Map::new();
        m.insert("architectures".into(), vec![self.arch.hf_class()].into());
        m.insert("model_type".into(), self.arch.model_type().into());
        m.insert("vocab_size".into(), self.vocab_size.into());
        m.insert("hidden_size".into(), self.hidden_size.into());
        m.insert("intermediate_size".into(), self.intermediate_size.into());
        m.insert("num_hidden_layers".into(), self.num_hidden_layers.into());
        m.insert(
            "num_attention_heads".into(),
            self.num_attention_heads.into(),
        );
        m.insert(
            "num_key_value_heads".into(),
            self.num_key_value_heads.into(),
        );
        m.insert("head_dim".into(), self.head_dim.into());
        m.insert("hidden_act".into(), "silu".into());
        m.insert("rms_norm_eps".into(), self.rms_norm_eps.into());
        // Both layouts: transformers 5 reads `rope_parameters`, 4.x reads the two old fields.
        m.insert("rope_theta".into(), self.rope_theta.into());
        if self.rope_scaling != RopeScaling::None {
            m.insert("rope_scaling".into(), Value::Object(rope.clone()));
        }
        m.insert("rope_parameters".into(), Value::Object(rope));
        m.insert(
            "max_position_embeddings".into(),
            self.max_position_embeddings.into(),
        );
        m.insert(
            "tie_word_embeddings".into(),
            self.tie_word_embeddings.into(),
        );
        m.insert("torch_dtype".into(), "float32".into());
        m.insert("dtype".into(), "float32".into());
        if self.arch != Arch::Mistral {
            m.insert("attention_bias".into(), self.attention_bias.into());
            m.insert("mlp_bias".into(), self.mlp_bias.into());
        }
        if self.arch == Arch::Mistral {
            m.insert(
                "sliding_window".into(),
                self.sliding_window.map_or(Value::Null, Value::from),
            );
        }
        if self.arch == Arch::Granite {
            m.insert(
                "embedding_multiplier".into(),
                self.embedding_multiplier.into(),
            );
            m.insert(
                "residual_multiplier".into(),
                self.residual_multiplier.into(),
            );
            m.insert(
                "attention_multiplier".into(),
                self.attention_multiplier.into(),
            );
            m.insert("logits_scaling".into(), self.logits_scaling.into());
        }
        for (k, v) in [
            ("bos_token_id", &self.bos_token_id),
            ("eos_token_id", &self.eos_token_id),
            ("pad_token_id", &self.pad_token_id),
        ] {
            m.insert(k.into(), v.clone().unwrap_or(Value::Null));
        }
        Value::Object(m)
    }

    /// Writes [`ModelConfig::to_hf_json`] to `path`.
    pub fn write_hf(&self, path: &Path) -> Result<(), ConfigError> {
        let text = serde_json::to_string_pretty(&self.to_hf_json()).expect("a JSON value prints");
        fs_err::write(path, text + "\n").map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Query heads per key-value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The rotary inverse frequencies, `head_dim / 2` of them, computed as transformers does
    /// (in f32 from an integer range).
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta as f32;
        let plain: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
            .collect();
        match self.rope_scaling {
            RopeScaling::None => plain,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                plain
                    .into_iter()
                    .map(|f| {
                        let f = f as f64;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let out = if wavelen < high_wavelen || wavelen > low_wavelen {
                            scaled
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        };
                        out as f32
                    })
                    .collect()
            }
        }
    }
}

fn unsupported(path: &Path, field: &str, value: &str) -> ConfigError {
    ConfigError::Unsupported {
        path: path.to_path_buf(),
        field: field.to_string(),
        value: value.to_string(),
    }
}

/// `rope_theta` and the scaling, from either layout: transformers 5's `rope_parameters`, or 4.x's
/// top-level `rope_theta` plus `rope_scaling`.
fn parse_rope(f: &Fields<'_>, path: &Path) -> Result<(f64, RopeScaling), ConfigError> {
    let block = match (f.get("rope_parameters"), f.get("rope_scaling")) {
        (Some(v), _) | (None, Some(v)) => Some(v),
        (None, None) => None,
    };
    let block = match block {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => return Err(f.bad("rope_parameters", v, "an object")),
    };
    let inner = block.map(|obj| Fields { path, obj });
    let theta = match inner
        .as_ref()
        .map(|b| b.opt_f64("rope_theta"))
        .transpose()?
    {
        Some(Some(t)) => t,
        _ => f.opt_f64("rope_theta")?.unwrap_or(10000.0),
    };
    let Some(b) = inner else {
        return Ok((theta, RopeScaling::None));
    };
    let rope_type = match b.opt_str("rope_type")? {
        Some(t) => t,
        None => b.opt_str("type")?.unwrap_or("default"),
    };
    if let Some(p) = b.opt_f64("partial_rotary_factor")?
        && p != 1.0
    {
        return Err(unsupported(path, "partial_rotary_factor", &p.to_string()));
    }
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "llama3" => {
            let field = |name: &str| {
                b.f64(name).map_err(|e| match e {
                    ConfigError::Missing { path, field } => ConfigError::Missing {
                        path,
                        field: format!("rope_parameters.{field}"),
                    },
                    other => other,
                })
            };
            let low = field("low_freq_factor")?;
            let high = field("high_freq_factor")?;
            if high <= low {
                return Err(b.bad(
                    "high_freq_factor",
                    &Value::from(high),
                    "greater than low_freq_factor",
                ));
            }
            RopeScaling::Llama3 {
                factor: field("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: b
                    .usize("original_max_position_embeddings")
                    .map_err(|_| f.missing("rope_parameters.original_max_position_embeddings"))?,
            }
        }
        other => return Err(unsupported(path, "rope_type", other)),
    };
    Ok((theta, scaling))
}
