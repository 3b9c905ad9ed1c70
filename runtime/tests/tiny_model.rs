//! `sftctl-train make-tiny-model`: the real binary writes a model of each architecture that the
//! runtime (and transformers, when present) loads, with the project's tiny tokenizer beside it
//! (or a given tokenizer directory copied).

use std::path::PathBuf;
use std::process::Command;

use sftctl_runtime::config::Arch;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn make_tiny_model_writes_a_loadable_model_of_each_architecture() {
    let device = sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap();
    for (name, arch) in [
        ("llama", Arch::Llama),
        ("mistral", Arch::Mistral),
        ("granite", Arch::Granite),
    ] {
        let out = tempfile::tempdir().unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_sftctl-train"))
            .args(["make-tiny-model", "--arch", name, "--out"])
            .arg(out.path())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let model = sftctl_runtime::weights::load_model(out.path(), &device).unwrap();
        assert_eq!(model.config.arch, arch);
        let tok: serde_json::Value = serde_json::from_str(
            &fs_err::read_to_string(out.path().join("tokenizer.json")).unwrap(),
        )
        .unwrap();
        let max_added = tok["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(
            model.config.vocab_size as u64 > max_added,
            "vocab covers the tokenizer"
        );
        assert!(out.path().join("tokenizer_config.json").is_file());
        assert!(out.path().join("tokenizer.json").is_file());
        let python = PathBuf::from("/opt/sftctl-venv/bin/python");
        if python.exists() {
            let o = Command::new(&python)
                .arg(fixture("hf_logits.py"))
                .arg(out.path())
                .args(["1", "5", "9"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

#[test]
fn make_tiny_model_copies_a_given_tokenizer() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sftctl-train"))
        .args(["make-tiny-model", "--arch", "granite", "--out"])
        .arg(out.path())
        .arg("--tokenizer")
        .arg(fixture("tokenizer"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let device = sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap();
    let model = sftctl_runtime::weights::load_model(out.path(), &device).unwrap();
    assert_eq!(
        model.config.vocab_size, 300,
        "vocab follows the given tokenizer.json"
    );
}

#[test]
fn make_tiny_model_rejects_an_unknown_architecture() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sftctl-train"))
        .args(["make-tiny-model", "--arch", "gpt2", "--out"])
        .arg(out.path())
        .arg("--tokenizer")
        .arg(fixture("tokenizer"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`gpt2`"));
}
