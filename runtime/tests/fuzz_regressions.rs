//! Forged model files must be errors, never panics, hangs or huge allocations: `config.json`
//! with absurd sizes and safetensors files whose header length or offsets lie. Replays the
//! See docs/reliability.md.

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
