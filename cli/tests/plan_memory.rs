//! `sftctl plan` shows a per-GPU memory estimate from the model's `config.json` and warns about
//! runs over the GPU's memory (issue 9); without a readable config the plan still prints.

use std::process::Command;

const LLAMA_3B: &str = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":128256,
"hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":28,"num_attention_heads":24,
"num_key_value_heads":8,"head_dim":128,"tie_word_embeddings":true}"#;

const SPEC: &str = r#"[sweep]
name = "mem"
ledger = "ledger"
[model]
path = "m"
[[data]]
name = "d"
path = "d.jsonl"
[train]
max_seq_len = 2048
token_budget_per_gpu = 8192
attention = "plain"
[grid]
activation_checkpointing = ["none", "blocks"]
[slurm]
nodes = 1
gpus_per_node = 8
time = "1:00:00"
"#;

fn plan(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sftctl"))
        .arg("plan")
        .arg(dir.join("s.toml"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn plan_estimates_memory_and_warns_over_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::create_dir(dir.path().join("m")).unwrap();
    fs_err::write(dir.path().join("m/config.json"), LLAMA_3B).unwrap();
    fs_err::write(dir.path().join("d.jsonl"), "").unwrap();
    fs_err::write(dir.path().join("s.toml"), SPEC).unwrap();

    let o = plan(dir.path(), &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    let mem = |i: usize| &runs[i]["memory_per_gpu"];
    assert_eq!(mem(0)["params"], 3_212_749_824u64);
    assert_eq!(mem(0)["weights"], 4 * 3_212_749_824u64);
    assert_eq!(mem(0)["optimizer"], 8 * 3_212_749_824u64);
    // Checkpointing keeps far fewer activations; only the plain run exceeds 80 GiB.
    let act = |i: usize| mem(i)["activations"].as_u64().unwrap();
    let (plain, blocks) = if runs[0]["train"]["activation_checkpointing"] == "none" {
        (0, 1)
    } else {
        (1, 0)
    };
    assert!(act(blocks) * 10 < act(plain));
    assert_eq!(mem(plain)["exceeds_gpu"], true);
    assert_eq!(mem(blocks)["exceeds_gpu"], false);

    let o = plan(dir.path(), &[]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stdout.contains("MEM/GPU"), "{stdout}");
    assert_eq!(stdout.matches("GiB!").count(), 1, "{stdout}");
    assert!(
        stderr.contains("warning: 1 run(s) need more than the GPU's 80 GiB"),
        "{stderr}"
    );
    let o = plan(dir.path(), &["--gpu-mem-gib", "1000"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));

    // No config.json: a note, the plan still prints.
    fs_err::remove_file(dir.path().join("m/config.json")).unwrap();
    let o = plan(dir.path(), &[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("note: no memory estimate: cannot read"));
}

/// On GPUs `attention = "auto"` is libtorch's fused kernel: the estimate drops the attention
/// scores and probabilities of every block.
#[test]
fn fused_attention_shrinks_the_activation_estimate() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::create_dir(dir.path().join("m")).unwrap();
    fs_err::write(dir.path().join("m/config.json"), LLAMA_3B).unwrap();
    fs_err::write(dir.path().join("d.jsonl"), "").unwrap();
    let spec = SPEC.replace("attention = \"plain\"\n", "").replace(
        "activation_checkpointing = [\"none\", \"blocks\"]",
        "attention = [\"plain\", \"auto\"]",
    );
    fs_err::write(dir.path().join("s.toml"), spec).unwrap();
    let o = plan(dir.path(), &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    let act = |kernel: &str| {
        runs.iter()
            .find(|r| r["train"]["attention"] == kernel)
            .unwrap()["memory_per_gpu"]["activations"]
            .as_u64()
            .unwrap()
    };
    // Per token and block: 12·3072 + 5·8192 + 3·24·2048 floats plain, 12·3072 + 5·8192 +
    // 2·24·128 + 24 fused (plus one 8192 × 2048 mask).
    assert_eq!(act("plain"), 28 * 8192 * 225_280 * 4);
    assert_eq!(act("auto"), 28 * 8192 * 83_992 * 4 + 8192 * 2048 * 4);
}
