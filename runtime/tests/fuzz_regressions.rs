//! Forged model files must be errors, never panics, hangs or huge allocations: `config.json`
//! with absurd sizes and safetensors files whose header length or offsets lie. Replays the
//! committed corpora of the `model_config` and `safetensors` fuzz targets (`fuzz/`); see
//! docs/reliability.md.

use sftctl_runtime::config::ModelConfig;
use std::path::Path;

fn base() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 300,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 128
    })
}

#[test]
fn forged_config_sizes_are_errors() {
    let p = Path::new("config.json");
    assert!(ModelConfig::from_json_str(&base().to_string(), p).is_ok());
    let big = [
        ("num_hidden_layers", serde_json::json!(1u64 << 40)),
        ("num_hidden_layers", serde_json::json!(100_000)),
        ("num_attention_heads", serde_json::json!(1u64 << 40)),
        ("head_dim", serde_json::json!(1u64 << 50)),
        ("hidden_size", serde_json::json!(u64::MAX)),
        ("vocab_size", serde_json::json!(1u64 << 62)),
        ("intermediate_size", serde_json::json!(1u64 << 33)),
        ("max_position_embeddings", serde_json::json!(1u64 << 60)),
        ("num_key_value_heads", serde_json::json!(0)),
        ("hidden_size", serde_json::json!(-1)),
        ("hidden_size", serde_json::json!(1.5)),
    ];
    for (k, v) in big {
        let mut c = base();
        c[k] = v.clone();
        if k == "num_attention_heads" {
            c["num_key_value_heads"] = v.clone();
            c["head_dim"] = serde_json::json!(1u64 << 40);
        }
        let e = ModelConfig::from_json_str(&c.to_string(), p).unwrap_err();
        assert!(
            e.to_string().contains(k) || k == "num_attention_heads",
            "{k}: {e}"
        );
    }
}

#[test]
fn forged_safetensors_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::from_json_str(&base().to_string(), Path::new("c")).unwrap();
    std::fs::write(dir.path().join("config.json"), base().to_string()).unwrap();
    let header = |h: &str, len_field: u64, extra: &[u8]| {
        let mut b = len_field.to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(extra);
        b
    };
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        header("{}", u64::MAX, &[]),
        header("{}", 1 << 40, &[]),
        header(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}",
            92,
            &[0; 4],
        ),
        header(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}",
            74,
            &[0; 8],
        ),
        header(
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
            54,
            &[0; 8],
        ),
        header("not json", 8, &[]),
    ];
    for bytes in cases {
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        let r = sftctl_runtime::weights::load_weights(
            dir.path(),
            cfg.clone(),
            &sftctl_runtime::backend::BackendChoice::compiled()[0]
                .device()
                .unwrap(),
        );
        assert!(r.is_err(), "{:?} loaded", String::from_utf8_lossy(&bytes));
    }
}

/// The tiny model the `model_config` and `safetensors` fuzz targets use (`fuzz/seeds/`).
fn tiny_dir() -> (tempfile::TempDir, serde_json::Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("fuzz/seeds/safetensors/tiny.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("fuzz/seeds/model_config/tiny.json")).unwrap();
    (dir, serde_json::from_str(&text).unwrap())
}

fn device() -> burn::tensor::Device {
    sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap()
}

#[test]
fn the_fuzz_seed_model_loads() {
    let (dir, cfg) = tiny_dir();
    let cfg = ModelConfig::from_json_str(&cfg.to_string(), Path::new("tiny.json")).unwrap();
    sftctl_runtime::weights::load_weights(dir.path(), cfg, &device()).unwrap();
}

/// Sizes a `config.json` may hold (each at most 2^24) but the weights do not have: an error,
/// found without allocating the configured sizes. The loader used to fill each missing or
/// misshapen tensor with zeros of the configured shape: here 2^24 x 2^24 floats (4 PiB), an
/// allocation failure that aborts the process.
#[test]
fn forged_config_sizes_do_not_allocate_the_configured_model() {
    let (dir, mut cfg) = tiny_dir();
    for k in ["vocab_size", "hidden_size", "intermediate_size"] {
        cfg[k] = serde_json::json!(1u64 << 24);
    }
    cfg["num_hidden_layers"] = serde_json::json!(4096);
    let cfg = ModelConfig::from_json_str(&cfg.to_string(), Path::new("forged.json")).unwrap();
    let e = sftctl_runtime::weights::load_weights(dir.path(), cfg, &device()).unwrap_err();
    assert!(e.to_string().contains("model.embed_tokens.weight"), "{e}");
    // Missing tensors (an empty file) as well.
    std::fs::write(
        dir.path().join("model.safetensors"),
        [&8u64.to_le_bytes()[..], b"{}      "].concat(),
    )
    .unwrap();
    let (_, mut cfg) = tiny_dir();
    cfg["vocab_size"] = serde_json::json!(1u64 << 24);
    cfg["hidden_size"] = serde_json::json!(1u64 << 24);
    let cfg = ModelConfig::from_json_str(&cfg.to_string(), Path::new("forged.json")).unwrap();
    let e = sftctl_runtime::weights::load_weights(dir.path(), cfg, &device()).unwrap_err();
    assert!(e.to_string().contains("model.embed_tokens.weight"), "{e}");
}

/// The committed corpora of the `model_config` and `safetensors` fuzz targets (and their
/// seeds), replayed the way the targets run them: errors are fine, panics are not.
#[test]
fn committed_model_file_corpora_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let device = device();
    let (tiny, tiny_cfg) = tiny_dir();
    let tiny_cfg = ModelConfig::from_json_str(&tiny_cfg.to_string(), Path::new("t")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (target, dirs) in [
        (
            "model_config",
            [
                "../fuzz/seeds/model_config",
                "tests/fuzz_regressions/model_config",
            ],
        ),
        (
            "safetensors",
            [
                "../fuzz/seeds/safetensors",
                "tests/fuzz_regressions/safetensors",
            ],
        ),
    ] {
        for d in dirs {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(d))
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            for f in files {
                let bytes = std::fs::read(&f).unwrap();
                if target == "model_config" {
                    if let Ok(text) = std::str::from_utf8(&bytes)
                        && let Ok(c) = ModelConfig::from_json_str(text, &f)
                    {
                        let _ = (c.kv_groups(), c.to_hf_json());
                        let _ = sftctl_runtime::weights::load_weights(tiny.path(), c, &device);
                    }
                } else {
                    std::fs::write(work.path().join("model.safetensors"), &bytes).unwrap();
                    let _ = sftctl_runtime::weights::load_weights(
                        work.path(),
                        tiny_cfg.clone(),
                        &device,
                    );
                }
                n += 1;
            }
        }
    }
    assert!(n >= 4, "only {n} corpus files");
}
