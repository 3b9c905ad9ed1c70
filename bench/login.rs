//! Login-node benchmarks: `sftctl plan` of a 10,000-point grid and `sftctl status` over a ledger
//! of 10,000 runs. Runs the release `sftctl` binary; prints medians of several runs.
//!
//! `cargo build --release -p sftctl && cargo bench -p sftctl-tests --bench login`
//!
//! Status uses stand-in `squeue`/`sacct` that answer nothing and count their calls, so the figure
//! is sftctl's own cost (reading 10,000 run directories), not the controller's.

use sftctl_ledger::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const REPS: usize = 5;

fn sftctl() -> PathBuf {
    if let Ok(p) = std::env::var("SFTCTL_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("bench path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("sftctl");
    assert!(
        p.is_file(),
        "`{}` missing: cargo build --release -p sftctl",
        p.display()
    );
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..REPS {
        let t = Instant::now();
        let st = Command::new(sftctl())
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run sftctl");
        assert!(st.success(), "sftctl {args:?} failed");
        samples.push(t.elapsed().as_secs_f64());
    }
    median(samples)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let spec = "[sweep]\nname = \"big\"\n[model]\npath = \"m\"\n[run]\ncommand = [\"true\"]\n\
        [grid]\nlr = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7e-5, 1e-4, 2e-4]\nseed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n\
        warmup_steps = [0, 5, 10, 25, 50, 75, 100, 150, 200, 300]\nbatch_size = [64, 128, 256, 512, 1024, 2048, 3840, 4096, 7680, 8192]\n";
    fs_err::write(d.join("big.toml"), spec).unwrap();
    let plan_table = time(&["plan", "big.toml"], d, &[]);
    let plan_json = time(&["plan", "big.toml", "--json"], d, &[]);
    println!("plan, 10,000 points (table): median {plan_table:.3} s over {REPS} runs");
    println!("plan, 10,000 points (--json): median {plan_json:.3} s over {REPS} runs");

    // A ledger of 10,000 runs: 10 arrays of 1,000 tasks, each run with a submission, an attempt,
    // 50 metric lines, a heartbeat, and a result for half of them.
    let ledger = Ledger::create(d.join("ledger"), "bench").unwrap();
    let sweep = ledger.sweep("big");
    let mut ids = Vec::new();
    for k in 0..10_000u64 {
        let id = format!("{k:012x}");
        let run = sweep.run(&id);
        run.write_run(&RunRecord {
            format_version: FORMAT_VERSION,
            run_id: id.clone(),
            name: format!("point={k}"),
            sweep: "big".into(),
            identity: serde_json::json!({}),
            resources: Resources {
                nodes: 1,
                gpus_per_node: 8,
                cpus_per_task: 8,
                time_limit_s: 3600,
            },
            phases: vec![PhaseInfo {
                phase: 0,
                script: "job.sh".into(),
            }],
            created_at: Timestamp::now(),
            sftctl_version: "bench".into(),
        })
        .unwrap();
        run.append_submission(&Submission {
            job_id: format!("{}_{}", 1000 + k / 1000, k % 1000),
            batch: "b".into(),
            phase: 0,
            attempt: 1,
            executor: Executor::Slurm,
            submitted_at: Timestamp::now(),
            depends_on: None,
        })
        .unwrap();
        let mut w = RunWriter::open(
            run.path(),
            0,
            Some(format!("{}_{}", 1000 + k / 1000, k % 1000)),
        )
        .unwrap();
        w.begin_attempt(&Attempt {
            job_id: "x".into(),
            attempt: 1,
            started_at: Timestamp::now(),
            nodes: vec!["n1".into()],
            world_size: 8,
            provenance: Provenance::default(),
            total_steps: Some(100),
            total_samples: Some(12_800),
            resumed_from_step: 0,
        })
        .unwrap();
        for step in 1..=50 {
            w.metric(&MetricRecord {
                step,
                epoch: step as f64 / 100.0,
                samples_seen: step * 128,
                tokens: step * 100_000,
                loss_tokens: step * 40_000,
                loss: 1.0 + 1.0 / step as f64,
                grad_norm: 0.5,
                lr: 2e-5,
                step_time_s: 1.5,
                tokens_per_s: 66_000.0,
                mem_bytes: Some(1 << 34),
                at: Timestamp::now(),
            })
            .unwrap();
        }
        w.heartbeat(50).unwrap();
        if k % 2 == 0 {
            w.write_result(&RunResult {
                status: ResultStatus::Completed,
                job_id: "x".into(),
                final_step: 100,
                samples_seen: 12_800,
                tokens: 10_000_000,
                final_loss: Some(1.01),
                wall_s: 150.0,
                at: Timestamp::now(),
                message: None,
            })
            .unwrap();
        }
        ids.push(id);
    }
    sweep
        .write_sweep(&SweepRecord {
            format_version: FORMAT_VERSION,
            name: "big".into(),
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            spec_sha256: String::new(),
            executor: Executor::Slurm,
            runtimes: vec![],
            runs: ids,
        })
        .unwrap();
    let bin = d.join("standin");
    fs_err::create_dir_all(&bin).unwrap();
    let calls = d.join("calls.log");
    for c in ["squeue", "sacct"] {
        let p = bin.join(c);
        fs_err::write(&p, format!("#!/bin/sh\necho {c} >> {}\n", calls.display())).unwrap();
        Command::new("chmod").arg("+x").arg(&p).status().unwrap();
    }
    let env = [("SFTCTL_SLURM_BIN", bin.to_str().unwrap())];
    let status_json = time(&["status", "big", "--ledger", "ledger", "--json"], d, &env);
    let status_table = time(&["status", "big", "--ledger", "ledger"], d, &env);
    let n = fs_err::read_to_string(&calls).unwrap_or_default();
    println!("status, 10,000 runs (table): median {status_table:.3} s over {REPS} runs");
    println!("status, 10,000 runs (--json): median {status_json:.3} s over {REPS} runs");
    println!(
        "Slurm calls per status: {} squeue, {} sacct",
        n.matches("squeue").count() / (2 * REPS),
        n.matches("sacct").count() / (2 * REPS)
    );
}
