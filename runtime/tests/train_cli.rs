//! `sftctl-train run` end to end on the tiny Llama and the bundled quickstart data: the ledger
//! records it writes, resume after SIGUSR1 (exit 75) and after `kill -9` mid-checkpoint, both
//! ending bit-identical to an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sftctl-train"));
    c.env_remove("SLURM_JOB_ID")
        .env_remove("SLURM_RESTART_COUNT")
        .env_remove("SFTCTL_PHASE")
        .env("RUST_LOG", "info");
    c
}

/// A tiny Llama with the data crate's Llama 3 tokenizer (it has a chat template).
fn make_model(dir: &Path) {
    let o = bin()
        .args(["make-tiny-model", "--arch", "llama", "--seed", "3", "--out"])
        .arg(dir)
        .arg("--tokenizer")
        .arg(repo().join("data/tests/fixtures/tiny-llama3"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A run directory as `sftctl plan` writes it: 12 steps of 8 samples, micro-batches of at most
/// 160 tokens (several per step), checkpoints every 4 steps, validation every 6.
fn make_run(root: &Path, model: &Path, name: &str) -> PathBuf {
    let run = root.join(name);
    fs_err::create_dir_all(&run).unwrap();
    let data = repo().join("examples/data/quickstart");
    let config = serde_json::json!({
        "format_version": 1,
        "run_id": name,
        "name": name,
        "sweep": "test",
        "model": {"path": model},
        "data": [{"name": "quickstart", "path": data.join("train.jsonl")}],
        "train": {
            "batch_size": 8, "lr": 1e-3, "warmup_steps": 3, "schedule": "cosine",
            "max_steps": 12, "token_budget_per_gpu": 160, "max_seq_len": 160,
            "checkpoint_every": 4, "eval_every": 6, "seed": 1
        },
        "phases": [0],
    });
    fs_err::write(run.join("config.json"), config.to_string()).unwrap();
    run
}

fn run_to_end(run: &Path, cache: &Path) -> std::process::Output {
    bin()
        .arg("run")
        .arg(run)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap()
}

fn spawn(run: &Path, cache: &Path, extra_env: &[(&str, &str)], extra: &[&str]) -> Child {
    let mut c = bin();
    c.arg("run")
        .arg(run)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    fs_err::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The final checkpoint's weights, Adam moments (by tensor name) and sampler state.
#[derive(PartialEq)]
struct FinalState {
    weights: Vec<u8>,
    adam: Vec<(String, Vec<u8>)>,
    sampler: serde_json::Value,
}

fn final_state(run: &Path) -> FinalState {
    let dir = run.join("checkpoints/step-12");
    assert!(
        dir.join("COMPLETE").is_file(),
        "no final checkpoint in {}",
        run.display()
    );
    let weights = fs_err::read(dir.join("model.safetensors")).unwrap();
    let bytes = fs_err::read(dir.join("optimizer.bpk")).unwrap();
    let reader = burn_pack::Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).unwrap();
    let mut adam: Vec<(String, Vec<u8>)> = reader
        .tensor_names()
        .into_iter()
        .map(|n| (n.to_string(), reader.tensor_data(n).unwrap()))
        .collect();
    adam.sort();
    let state: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("trainer_state.json")).unwrap()).unwrap();
    FinalState {
        weights,
        adam,
        sampler: state["sampler"].clone(),
    }
}

#[test]
fn run_writes_the_ledger_and_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    make_model(&model);
    let cache = tmp.path().join("cache");

    // Uninterrupted reference.
    let a = make_run(tmp.path(), &model, "a");
    let o = run_to_end(&a, &cache);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let metrics = lines(&a.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 12);
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1);
        assert_eq!(m["samples_seen"], 8 * (i as u64 + 1));
        assert!(m["loss"].as_f64().unwrap().is_finite());
        assert!(m["grad_norm"].as_f64().unwrap() > 0.0);
        assert!(m["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(metrics[0]["lr"], 0.0, "first warmup step");
    let first = metrics[0]["loss"].as_f64().unwrap();
    let last = metrics[11]["loss"].as_f64().unwrap();
    assert!(last < first, "loss went from {first} to {last}");
    let result: serde_json::Value =
        serde_json::from_slice(&fs_err::read(a.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["final_step"], 12);
    assert_eq!(result["samples_seen"], 96);
    assert_eq!(
        lines(&a.join("validation.jsonl"))
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![6, 12]
    );
    assert!(a.join("heartbeat/rank-0.json").is_file());
    assert_eq!(lines(&a.join("attempts.jsonl")).len(), 1);
    let ckpts: Vec<u64> = lines(&a.join("events/rank-0.jsonl"))
        .iter()
        .filter(|e| e["kind"] == "checkpoint")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(ckpts, vec![4, 8, 12]);
    // Kept: the newest two.
    assert!(!a.join("checkpoints/step-4").exists());
    assert!(a.join("checkpoints/step-8/COMPLETE").is_file());
    let reference = final_state(&a);

    // Two identical runs are bit-identical.
    let b = make_run(tmp.path(), &model, "b");
    assert!(run_to_end(&b, &cache).status.success());
    assert!(reference == final_state(&b), "two identical runs differ");

    // SIGUSR1 with no grace: the step in progress is abandoned, checkpointed, exit 75; the
    // rerun resumes and ends where the uninterrupted run ended.
    let c = make_run(tmp.path(), &model, "c");
    let mut child = spawn(&c, &cache, &[], &["--stop-grace-s", "0"]);
    wait_for("step 6", Duration::from_secs(300), || {
        lines(&c.join("metrics.jsonl")).len() >= 6
    });
    nix_kill(child.id(), "USR1");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75));
    let events = lines(&c.join("events/rank-0.jsonl"));
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "preempted" && e["signal"] == "USR1")
    );
    let o = run_to_end(&c, &cache);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lines(&c.join("attempts.jsonl")).len(), 2);
    assert!(
        reference == final_state(&c),
        "resumed after SIGUSR1 differs"
    );

    // kill -9 in the middle of the checkpoint of step 8 (after the weights, and separately after
    // the rename before the marker): the rerun resumes from step 4 and ends identical.
    for stage in ["weights", "renamed"] {
        let d = make_run(tmp.path(), &model, &format!("d-{stage}"));
        let pause = format!("{stage}@8");
        let mut child = spawn(&d, &cache, &[("SFTCTL_TEST_PAUSE_CHECKPOINT", &pause)], &[]);
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            let mut seen = String::new();
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.contains("paused in checkpoint") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(300))
            .expect("never paused");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(!d.join("checkpoints/step-8/COMPLETE").exists());
        let o = run_to_end(&d, &cache);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let attempts = lines(&d.join("attempts.jsonl"));
        assert_eq!(attempts.last().unwrap()["resumed_from_step"], 4, "{stage}");
        assert!(
            reference == final_state(&d),
            "resumed after kill -9 at {stage} differs"
        );
    }
}

fn nix_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -s {sig} {pid}");
}

/// Phase 2 starts from phase 1's final checkpoint: fresh schedule (warmup again), samples and
/// steps keep counting, `result.json` only after the last phase.
#[test]
fn phase_two_starts_from_phase_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    make_model(&model);
    let data = repo().join("examples/data/quickstart");
    let run = tmp.path().join("ph");
    fs_err::create_dir_all(&run).unwrap();
    let config = serde_json::json!({
        "format_version": 1, "run_id": "ph", "name": "ph", "sweep": "t",
        "model": {"path": model},
        "data": [
            {"name": "a", "path": data.join("train.jsonl"), "phase": 1},
            {"name": "b", "path": data.join("eval.jsonl"), "phase": 2}
        ],
        "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "max_steps": 3,
                  "max_seq_len": 256, "token_budget_per_gpu": 256, "strategy": "phased"},
        "phases": [1, 2],
    });
    fs_err::write(run.join("config.json"), config.to_string()).unwrap();
    let cache = tmp.path().join("cache");
    for phase in ["1", "2"] {
        let o = bin()
            .arg("run")
            .arg(&run)
            .arg("--cache-dir")
            .arg(&cache)
            .env("SFTCTL_PHASE", phase)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(run.join("result.json").is_file(), phase == "2");
    }
    let m = lines(&run.join("metrics.jsonl"));
    let steps: Vec<u64> = m.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    let samples: Vec<u64> = m
        .iter()
        .map(|r| r["samples_seen"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(samples, vec![8, 16, 24, 32, 40, 48]);
    assert_eq!(m[0]["lr"], 0.0);
    assert_eq!(m[3]["lr"], 0.0, "phase 2 warms up again");
    let attempts = lines(&run.join("attempts.jsonl"));
    assert_eq!(attempts[1]["resumed_from_step"], 3);
    let result: serde_json::Value =
        serde_json::from_slice(&fs_err::read(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["samples_seen"], 48);
}

/// `phase_init = "best-val-loss"`: phase 1 validates at each checkpoint, keeps the weights of its
/// best one by validation loss, and phase 2 starts from those weights (recorded in a
/// `phase_started` event), with the counters continuing from phase 1's end.
#[test]
fn phase_two_can_start_from_phase_ones_best_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    make_model(&model);
    let data = repo().join("examples/data/quickstart");
    let cache = tmp.path().join("cache");
    let go = |name: &str, init: &str| -> (PathBuf, Vec<serde_json::Value>, Vec<String>) {
        let run = tmp.path().join(name);
        fs_err::create_dir_all(&run).unwrap();
        let config = serde_json::json!({
            "format_version": 1, "run_id": name, "name": name, "sweep": "t",
            "model": {"path": model},
            "data": [
                {"name": "a", "path": data.join("train.jsonl"), "phase": 1},
                {"name": "b", "path": data.join("eval.jsonl"), "phase": 2}
            ],
            // A learning rate high enough that phase 1's validation loss turns up again.
            "train": {"batch_size": 8, "lr": 3e-2, "warmup_steps": 0, "max_steps": 8,
                      "max_seq_len": 256, "token_budget_per_gpu": 256, "checkpoint_every": 1,
                      "phase_init": init, "strategy": "phased"},
            "phases": [1, 2],
        });
        fs_err::write(run.join("config.json"), config.to_string()).unwrap();
        let mut with_weights = Vec::new();
        for phase in ["1", "2"] {
            let o = bin()
                .arg("run")
                .arg(&run)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["--keep-last", "1"])
                .env("SFTCTL_PHASE", phase)
                .output()
                .unwrap();
            assert_eq!(
                o.status.code(),
                Some(0),
                "phase {phase}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            if phase == "1" {
                with_weights = fs_err::read_dir(run.join("checkpoints"))
                    .unwrap()
                    .flatten()
                    .filter(|e| e.path().join("model.safetensors").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                with_weights.sort();
            }
        }
        let events = lines(&run.join("events/rank-0.jsonl"));
        (run, events, with_weights)
    };

    let (run, events, with_weights) = go("best", "best-val-loss");
    // Phase 1's validation losses at its checkpoints (steps 1..=8).
    let val: Vec<(u64, f64)> = lines(&run.join("validation.jsonl"))
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .filter(|(s, _)| *s <= 8)
        .collect();
    assert_eq!(
        val.iter().map(|v| v.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    let best = val
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|v| v.0)
        .unwrap();
    assert_ne!(best, 8, "phase 1's loss fell to the end; raise lr: {val:?}");
    let started: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "phase_started")
        .collect();
    assert_eq!(started.len(), 1, "{events:#?}");
    assert_eq!(started[0]["phase"], 2);
    assert_eq!(
        started[0]["step"], 8,
        "counters continue from phase 1's end"
    );
    assert_eq!(started[0]["init"], "best-val-loss");
    assert_eq!(started[0]["from"], format!("checkpoints/step-{best}"));
    // At the end of phase 1, keep-last 1 left the final checkpoint and the best one's weights.
    let mut want = vec![format!("step-{best}"), "step-8".to_owned()];
    want.sort();
    assert_eq!(with_weights, want);

    // The same with the default init starts from step 8, and phase 2 trains other weights.
    let (final_run, events, with_weights) = go("final", "final");
    assert_eq!(with_weights, vec!["step-8".to_owned()]);
    let started: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "phase_started")
        .collect();
    assert_eq!(started[0]["from"], "checkpoints/step-8");
    let first_loss_of_phase_2 = |run: &Path| {
        lines(&run.join("metrics.jsonl"))
            .iter()
            .find(|m| m["step"] == 9)
            .map(|m| m["loss"].as_f64().unwrap())
            .unwrap()
    };
    assert_ne!(
        first_loss_of_phase_2(&run),
        first_loss_of_phase_2(&final_run),
        "phase 2 started from the same weights"
    );
}

/// The run's `config.json` with `edit` applied to its `train` table.
fn edit_train(run: &Path, edit: serde_json::Value) {
    let path = run.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in edit.as_object().unwrap() {
        config["train"][k] = v.clone();
    }
    fs_err::write(&path, config.to_string()).unwrap();
}

/// `adam_beta1`, `adam_beta2`, `adam_epsilon` reach the optimizer, and
/// `checkpoint_every_samples` places checkpoints by samples seen, not steps.
#[test]
fn adam_settings_and_checkpoints_by_samples_come_from_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    make_model(&model);
    let cache = tmp.path().join("cache");
    let losses = |run: &Path| -> Vec<f64> {
        lines(&run.join("metrics.jsonl"))
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect()
    };
    let a = make_run(tmp.path(), &model, "defaults");
    let b = make_run(tmp.path(), &model, "adam");
    // 20 samples between checkpoints at 8 per step: after steps 3 (24), 5 (40), 8 (64), 10 (80)
    // and at the end (12).
    edit_train(
        &b,
        serde_json::json!({"adam_beta1": 0.0, "adam_beta2": 0.5, "adam_epsilon": 1e-3,
            "checkpoint_every_samples": 20}),
    );
    for run in [&a, &b] {
        let o = run_to_end(run, &cache);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (la, lb) = (losses(&a), losses(&b));
    // Steps 1 and 2 see the same weights (step 1's learning rate is 0 in warmup); from step 3
    // on the other moments give other updates.
    assert_eq!(la[..2], lb[..2]);
    assert!(
        la[2..].iter().zip(&lb[2..]).all(|(x, y)| x != y),
        "{la:?}\n{lb:?}"
    );
    let steps = |run: &Path| -> Vec<u64> {
        let mut v: Vec<u64> = lines(&run.join("events/rank-0.jsonl"))
            .iter()
            .filter(|e| e["kind"] == "checkpoint")
            .map(|e| e["step"].as_u64().unwrap())
            .collect();
        v.dedup();
        v
    };
    assert_eq!(steps(&a), [4, 8, 12]);
    assert_eq!(steps(&b), [3, 5, 8, 10, 12]);
}
