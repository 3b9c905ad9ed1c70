//! Fuzzes the safetensors reader of the weights loader: the input is `model.safetensors` of a
//! tiny model (`seeds/model_config/tiny.json`), loaded as the runtime loads a base model or a
//! checkpoint. Forged header lengths, offsets, shapes and dtypes must be errors; panics, hangs
//! and allocations beyond the input's size are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_runtime::config::ModelConfig;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<(PathBuf, ModelConfig)> = OnceLock::new();
    let (dir, config) = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let text = include_str!("../seeds/model_config/tiny.json");
        let config = ModelConfig::from_json_str(text, Path::new("tiny.json")).unwrap();
        (d, config)
    });
    std::fs::write(dir.join("model.safetensors"), data).unwrap();
    let device = sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap();
    let _ = sftctl_runtime::weights::load_weights(dir, config.clone(), &device);
});
