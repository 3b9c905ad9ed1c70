//! Checkpoint files: saving in Hugging Face layout and reading it back (in the runtime and in
//! transformers), and clear errors for broken files — each naming the file at fault.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Int, Tensor, TensorData};
use sftctl_runtime::config::{ConfigError, ModelConfig};
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::weights::{self, SaveDtype, WeightsError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn device() -> Device {
    sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap()
}

/// Copies a fixture checkpoint into a fresh temporary directory.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in fs_err::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        fs_err::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    for entry in fs_err::read_dir(fixture("tokenizer")).unwrap() {
        let entry = entry.unwrap();
        fs_err::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

fn logits(model: &CausalLm, tokens: &[i64], device: &Device) -> Vec<f32> {
    let t = tokens.len();
    let tok: Tensor<2, Int> = Tensor::from_data(TensorData::new(tokens.to_vec(), [1, t]), device);
    let pos: Tensor<2, Int> = Tensor::from_data(
        TensorData::new((0..t as i64).collect::<Vec<_>>(), [1, t]),
        device,
    );
    let seq: Tensor<2, Int> = Tensor::zeros([1, t], device);
    model
        .forward(tok, pos, seq)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The Python with transformers, if this machine has it. `SFTCTL_REQUIRE_PYTHON=1` (CI) makes
/// its absence a failure instead of a skip.
fn python() -> Option<PathBuf> {
    let p = std::env::var_os("SFTCTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/sftctl-venv/bin/python"));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("SFTCTL_REQUIRE_PYTHON").is_none(),
        "SFTCTL_REQUIRE_PYTHON is set but `{}` does not exist",
        p.display()
    );
    eprintln!("skipped: no Python with transformers at `{}`", p.display());
    None
}

fn hf_logits(python: &Path, dir: &Path, tokens: &[i64]) -> Vec<f32> {
    let out = Command::new(python)
        .arg(fixture("hf_logits.py"))
        .arg(dir)
        .args(tokens.iter().map(i64::to_string))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hf_logits.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

/// Saved by the runtime (tied and untied, fp32 and bf16), read by the runtime and by
/// transformers as the same model.
#[test]
fn saved_checkpoints_round_trip_through_transformers() {
    let device = device();
    let tokens = [5i64, 17, 3, 42, 8, 63, 21, 9, 30];
    for (name, dtype) in [
        ("llama", SaveDtype::F32),
        ("granite", SaveDtype::F32),
        ("mistral", SaveDtype::Bf16),
    ] {
        let model = weights::load_model(&fixture(name), &device).unwrap();
        let out = tempfile::tempdir().unwrap();
        weights::save_model(&model, out.path(), &fixture("tokenizer"), dtype).unwrap();
        assert!(out.path().join("tokenizer.json").is_file());
        assert!(out.path().join("tokenizer_config.json").is_file());

        let reloaded = weights::load_model(out.path(), &device).unwrap();
        assert_eq!(reloaded.config, model.config, "{name}: config round trip");
        let ours = logits(&reloaded, &tokens, &device);
        let before = logits(&model, &tokens, &device);
        let tol = if dtype == SaveDtype::F32 { 1e-6 } else { 2e-2 };
        let e = rel_err(&ours, &before);
        assert!(e <= tol, "{name}: reloaded logits differ by {e:.2e}");

        if let Some(py) = python() {
            let theirs = hf_logits(&py, out.path(), &tokens);
            let e = rel_err(&ours, &theirs);
            assert!(e <= 1e-4, "{name}: transformers' logits differ by {e:.2e}");
        }
    }
}

#[test]
fn truncated_safetensors_is_an_error_naming_the_file() {
    let dir = copy_fixture("granite");
    let path = dir.path().join("model.safetensors");
    let bytes = fs_err::read(&path).unwrap();
    fs_err::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = weights::load_model(dir.path(), &device()).unwrap_err();
    assert!(matches!(err, WeightsError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_missing_shard_is_an_error_naming_the_file() {
    let dir = copy_fixture("llama_bfloat16");
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    fs_err::remove_file(&shard).unwrap();
    let err = weights::load_model(dir.path(), &device()).unwrap_err();
    assert!(
        err.to_string().contains(&shard.display().to_string()),
        "{err}"
    );
}

#[test]
fn config_missing_a_field_is_an_error_naming_file_and_field() {
    let dir = copy_fixture("llama");
    let path = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("intermediate_size");
    fs_err::write(&path, v.to_string()).unwrap();
    let err = weights::load_model(dir.path(), &device()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, WeightsError::Config(ConfigError::Missing { .. })),
        "{err:?}"
    );
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("intermediate_size"),
        "{msg}"
    );
}

#[test]
fn shape_mismatch_is_an_error_naming_file_tensor_and_shapes() {
    let dir = copy_fixture("mistral");
    let path = dir.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
    v["intermediate_size"] = 40.into();
    fs_err::write(&path, v.to_string()).unwrap();
    let err = weights::load_model(dir.path(), &device()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Shape { .. }), "{err:?}");
    assert!(
        msg.contains("model.safetensors")
            && msg.contains("mlp.gate_proj.weight")
            && msg.contains("[48, 32]")
            && msg.contains("[40, 32]"),
        "{msg}"
    );
}

#[test]
fn missing_tokenizer_is_an_error_naming_the_file() {
    let model = weights::load_model(&fixture("llama"), &device()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let no_tok = tempfile::tempdir().unwrap();
    let err = weights::save_model(&model, out.path(), no_tok.path(), SaveDtype::F32).unwrap_err();
    assert!(matches!(err, WeightsError::NoTokenizer { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&no_tok.path().join("tokenizer.json").display().to_string()),
        "{err}"
    );
    let err = weights::require_tokenizer(&fixture("llama")).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn unsupported_architecture_and_rope_type_are_errors() {
    let p = Path::new("/x/config.json");
    let base = fs_err::read_to_string(fixture("llama").join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
    let err = ModelConfig::from_json_str(&v.to_string(), p).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnsupportedArch { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/x/config.json") && err.to_string().contains("Qwen2ForCausalLM")
    );

    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["rope_parameters"]["rope_type"] = "yarn".into();
    let err = ModelConfig::from_json_str(&v.to_string(), p).unwrap_err();
    assert!(err.to_string().contains("yarn"), "{err}");

    let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
    v["hidden_act"] = "gelu".into();
    assert!(ModelConfig::from_json_str(&v.to_string(), p).is_err());
}

/// transformers 4.x wrote `rope_theta` and `rope_scaling` at the top level; both layouts read the
/// same. Table: (config fragment, expected theta, expected llama3 factor or none).
#[test]
fn old_and_new_rope_layouts_parse_alike() {
    let p = Path::new("config.json");
    let base = r#""architectures":["LlamaForCausalLM"],"vocab_size":64,"hidden_size":32,
        "intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"rms_norm_eps":1e-5"#;
    let l3 = r#""factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192"#;
    let cases = [
        (String::new(), 10000.0, None),
        (r#","rope_theta":500000.0"#.to_string(), 500000.0, None),
        (
            format!(r#","rope_theta":500000.0,"rope_scaling":{{"rope_type":"llama3",{l3}}}"#),
            500000.0,
            Some(8.0),
        ),
        (
            format!(r#","rope_parameters":{{"rope_type":"llama3","rope_theta":500000.0,{l3}}}"#),
            500000.0,
            Some(8.0),
        ),
        (
            r#","rope_parameters":{"rope_type":"default","rope_theta":1000.0}"#.to_string(),
            1000.0,
            None,
        ),
    ];
    for (frag, theta, factor) in cases {
        let c = ModelConfig::from_json_str(&format!("{{{base}{frag}}}"), p).unwrap();
        assert_eq!(c.rope_theta, theta, "{frag}");
        let got = match c.rope_scaling {
            sftctl_runtime::config::RopeScaling::Llama3 { factor, .. } => Some(factor),
            sftctl_runtime::config::RopeScaling::None => None,
        };
        assert_eq!(got, factor, "{frag}");
        assert_eq!((c.head_dim, c.num_key_value_heads), (8, 4));
    }
}
