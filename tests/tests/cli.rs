//! `sftctl` end to end without Slurm: plan output, plan-time template errors, exit codes, and
//! that no spec value reaches the shell unquoted (run through the local executor).

use sftctl_tests::*;

#[test]
fn plan_lists_every_point_with_ids_and_gpu_hours() {
    let sb = Sandbox::new(false);
    sb.write(
        "p.toml",
        &spec_text("p", "gpus_per_node = 4\nnodes = 2\n[grid]\nlr = [1e-5, 0.00002]\nseed = [0, 1]\n[[grid.exclude]]\nlr = 1e-5\nseed = 1\n"),
    );
    let table = sb.ok(&["plan", "p.toml"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].contains("RUN") && rows[0].contains("lr") && rows[0].contains("seed"));
    // 2 nodes x 4 GPUs x 5 minutes = 0.67 GPU-hours per run.
    assert!(rows[1..].iter().all(|r| r.ends_with("0.67")), "{table}");
    let plan: serde_json::Value =
        serde_json::from_str(&sb.ok(&["plan", "p.toml", "--json"])).unwrap();
    assert_eq!(plan["runs"].as_array().unwrap().len(), 3);
    assert_eq!(plan["runs"][2]["train"]["lr"], 2e-5);
    // Planning writes nothing.
    assert!(!sb.path().join("ledger").exists());
    // The same point written differently has the same id.
    sb.write(
        "q.toml",
        &spec_text(
            "p",
            "gpus_per_node = 4\nnodes = 2\n[train]\nlr = 2e-5\nseed = 1\nwarmup_steps = 0\n",
        ),
    );
    let q: serde_json::Value = serde_json::from_str(&sb.ok(&["plan", "q.toml", "--json"])).unwrap();
    let ids: Vec<&str> = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&q["runs"][0]["run_id"].as_str().unwrap()),
        "{ids:?} vs {q}"
    );
}

#[test]
fn a_template_with_an_undefined_variable_fails_at_plan_time() {
    let sb = Sandbox::new(false);
    sb.write(
        "t.j2",
        "#!/bin/bash\n#SBATCH --nodes={{ nodes }}\n{{ command|argv }} --gpus {{ gpu_count }}\n",
    );
    sb.write(
        "t.toml",
        &spec_text("t", "").replace("[run]\n", "[run]\ntemplate = \"t.j2\"\n"),
    );
    let o = sb.sftctl(&["plan", "t.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("t.j2") && err.contains("undefined"), "{err}");
    let o = sb.sftctl(&["submit", "t.toml", "--executor", "local"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!sb.path().join("ledger").exists());
}

#[test]
fn user_errors_exit_1() {
    let sb = Sandbox::new(false);
    let o = sb.sftctl(&["plan", "missing.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
    let o = sb.sftctl(&["logs", "nope", "--ledger", "ledger"]);
    assert_eq!(o.status.code(), Some(1));
    let o = sb.sftctl(&["status", "nosweep", "--ledger", "ledger"]);
    assert_eq!(o.status.code(), Some(1));
    let o = sb.sftctl(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    // A missing runtime binary is reported before anything is written.
    sb.write(
        "b.toml",
        &spec_text("b", "").replace("./fake-train.sh", "./no-such-binary"),
    );
    let o = sb.sftctl(&["submit", "b.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-binary"));
    assert!(!sb.path().join("ledger").exists());
}

#[test]
fn spec_values_cannot_inject_shell_code() {
    let sb = Sandbox::new(false);
    let pwned = sb.path().join("pwned");
    let evil = format!(
        "$(touch {p}); touch {p}; `touch {p}`'\"",
        p = pwned.display()
    );
    let toml_evil = evil.replace('\\', "\\\\").replace('"', "\\\"");
    sb.write(
        "e.toml",
        &spec_text(
            "e",
            &format!(
                "[env]\nvars = {{ SFT_STEPS = \"1\", EVIL = \"{toml_evil}\" }}\nmodules = []\n"
            ),
        )
        .replace(
            "[run]\n",
            "[run]\ncommand = [\"{binary}\", \"run\", \"{run_dir}\"]\n",
        ),
    );
    sb.ok(&["submit", "e.toml", "--executor", "local", "--wait"]);
    assert!(!pwned.exists(), "a spec value ran as shell code");
    let status = sb.status("e.toml");
    assert!(all_in(&status, "completed"), "{status:#}");
    let run = status["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let script =
        std::fs::read_to_string(sb.path().join(format!("ledger/sweeps/e/runs/{run}/job.sh")))
            .unwrap();
    assert!(script.contains("export EVIL='$(touch"), "{script}");
    // The logs command prints the job's output, and follows until the run is final.
    let logs = sb.ok(&["logs", &run, "-f", "--ledger", "ledger"]);
    assert!(logs.contains("fake-train: done"), "{logs}");
    // --watch returns at once when every run is final.
    let watch = sb.ok(&["status", "e.toml", "--watch", "--interval", "1"]);
    assert!(watch.contains("1 completed"), "{watch}");
}

#[test]
fn data_inspect_shows_the_mask_histogram_and_drops() {
    let sb = Sandbox::new(false);
    let model = repo().join("examples/models/tiny-llama");
    let data = repo().join("examples/data/quickstart/train.jsonl");
    // A short maximum length so that some samples are dropped, and counted.
    let out = sb.ok(&[
        "data",
        "inspect",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--max-len",
        "40",
    ]);
    let report: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "data",
        "inspect",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--max-len",
        "40",
        "--json",
    ]))
    .unwrap();
    let kept = report["samples"].as_u64().unwrap();
    assert!(kept > 0 && kept < 400, "{report:#}");
    assert!(report["loss_tokens"].as_u64().unwrap() < report["tokens"].as_u64().unwrap());
    assert!(out.contains("train.jsonl"), "{out}");

    // A malformed line is an error naming the file and line, exit code 1.
    let bad = sb.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{not json\n",
    )
    .unwrap();
    let o = sb.sftctl(&[
        "data",
        "inspect",
        bad.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.jsonl:2"), "{err}");
}
