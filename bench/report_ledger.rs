//! Writes a synthetic ledger for `bench/report_bench.sh`: RUNS runs × STEPS optimizer steps of
//! metrics (the records `sftctl-train` writes, through `RunWriter`), a config per run on a
//! batch-size × learning-rate × seed grid, and an MMLU evaluation at four checkpoints each.
//!
//! cargo run --release -p sftctl --example report_ledger -- OUT RUNS STEPS

use sftctl_ledger::results::write_eval_at;
use sftctl_ledger::{
    EvalResult, Executor, Ledger, MetricRecord, ResultStatus, RunResult, RunWriter, SweepRecord,
    Timestamp,
};
use std::collections::BTreeMap;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: report_ledger OUT RUNS STEPS");
    let (out, runs, steps): (&str, usize, u64) = (&args[1], args[2].parse()?, args[3].parse()?);
    let l = Ledger::create(out, "bench")?;
    let sweep = l.sweep("bench");
    let ids: Vec<String> = (0..runs).map(|i| format!("run{i:06}")).collect();
    let now = Timestamp::now();
    sweep.write_sweep(&SweepRecord {
        format_version: 1,
        name: "bench".into(),
        created_at: now,
        updated_at: now,
        spec_sha256: "0".into(),
        executor: Executor::Local,
        runtimes: vec![],
        runs: ids.clone(),
    })?;
    let batch = [8u64, 32, 128, 512, 2048];
    let lrs = [1e-5, 2e-5, 4e-5, 8e-5];
    for (i, id) in ids.iter().enumerate() {
        let (bs, lr, seed) = (batch[i % 5], lrs[(i / 5) % 4], i / 20);
        let dir = sweep.run(id);
        dir.write_config(&serde_json::json!({
            "run_id": id, "name": format!("bench-{i}"), "sweep": "bench",
            "train": {"batch_size": bs, "lr": lr, "seed": seed},
        }))?;
        let mut w = RunWriter::open(dir.path(), 0, None)?;
        for step in 1..=steps {
            let s = (step * bs) as f64;
            w.metric(&MetricRecord {
                step,
                epoch: step as f64 / steps as f64,
                samples_seen: step * bs,
                tokens: step * bs * 512,
                loss_tokens: step * bs * 200,
                loss: 1.0 + 2.0 / (1.0 + s / 1e4) + (i % 7) as f64 * 1e-3,
                grad_norm: 0.5 + 1.0 / (1.0 + s / 5e3) + (seed as f64) * 1e-3,
                lr,
                step_time_s: 0.25,
                tokens_per_s: 30000.0,
                mem_bytes: Some(40 << 30),
                at: now,
            })?;
        }
        for k in 1..=4u64 {
            write_eval_at(
                dir.path(),
                &EvalResult {
                    name: "mmlu".into(),
                    step: steps * k / 4,
                    metrics: BTreeMap::from([
                        ("acc".into(), 0.4 + 0.01 * k as f64 + (i % 11) as f64 * 1e-3),
                        ("acc_subject_mean".into(), 0.39 + 0.01 * k as f64),
                    ]),
                    at: now,
                },
            )?;
        }
        w.write_result(&RunResult {
            status: ResultStatus::Completed,
            job_id: format!("local-{i}"),
            final_step: steps,
            samples_seen: steps * bs,
            tokens: 0,
            final_loss: None,
            wall_s: 1.0,
            at: now,
            message: None,
        })?;
    }
    Ok(())
}
