//! Fuzzes `config.json`: the input is parsed as a model config and, when it parses, loaded
//! with a fixed tiny safetensors file (`seeds/safetensors/tiny.safetensors`'s tensors), so
//! forged sizes meet the weights loader. Errors are fine; panics, hangs and allocations sized
//! by the config (not by the input) are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_runtime::config::ModelConfig;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("model.safetensors"),
            include_bytes!("../seeds/safetensors/tiny.safetensors"),
        )
        .unwrap();
        d
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ModelConfig::from_json_str(text, Path::new("config.json")) else {
        return;
    };
    let _ = config.kv_groups();
    let _ = config.to_hf_json();
    let device = sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap();
    let _ = sftctl_runtime::weights::load_weights(dir, config, &device);
});
