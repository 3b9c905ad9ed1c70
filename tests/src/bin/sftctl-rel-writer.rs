//! A stand-in training job for the ledger crash tests (`tests/tests/reliability_ledger.rs`): it
//! writes every kind of record through the real `RunWriter`, resumes from its last complete
//! checkpoint, and acknowledges each record outside the ledger once the call has returned (what
//! is acknowledged was committed and must survive any later kill).
//!
//! Usage (as a sweep's job command): `sftctl-rel-writer run RUN_DIR`. Environment:
//! `REL_ACK_DIR` (where acknowledgements go, one file per run), `REL_FAILPOINTS=1` (arm the
//! ledger failpoint this run's seed selects, see `failpoint_for_seed`), `REL_ENOSPC=1` (the
//! failpoint fails the write with ENOSPC instead of killing), `REL_STEP_MS` (sleep per step,
//! default 15).

use anyhow::{Context, Result, bail};
use sftctl_ledger::failpoint::NAMES;
use sftctl_ledger::io::read_jsonl;
use sftctl_ledger::writer::latest_checkpoint;
use sftctl_ledger::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Checkpoint every this many steps.
const CHECKPOINT_EVERY: u64 = 5;

/// The failpoint (name, n-th hit) a seed arms: seeds `0..2*NAMES.len()` cover every failpoint at
/// its first and third hit; higher seeds arm none (the test kills those at random times).
fn failpoint_for_seed(seed: u64) -> Option<String> {
    let n = NAMES.len() as u64;
    (seed < 2 * n).then(|| format!("{}@{}", NAMES[(seed % n) as usize], 1 + 2 * (seed / n)))
}

/// The loss this toy run records at `step` (the test checks acknowledged values against it).
fn loss_at(seed: u64, step: u64) -> f64 {
    1.0 / (step as f64 + 1.0) + seed as f64 * 1e-3
}

fn ack(dir: &Path, run_id: &str, line: &str) -> Result<()> {
    let p = dir.join(format!("{run_id}.acks"));
    let mut f = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 || args[1] != "run" {
        bail!("usage: sftctl-rel-writer run RUN_DIR");
    }
    let run_dir = Path::new(&args[2]);
    let cfg: serde_json::Value = io::read_json(&run_dir.join("config.json"))?
        .with_context(|| format!("no config.json in `{}`", run_dir.display()))?;
    let seed = cfg["train"]["seed"].as_u64().unwrap_or(0);
    let steps = cfg["train"]["max_steps"].as_u64().unwrap_or(20);
    // The failpoint is read from the environment once, at the first write: arm it by starting
    // this program again with `SFTCTL_FAILPOINT` set (the parent only waits).
    if std::env::var_os("REL_FAILPOINTS").is_some()
        && std::env::var_os("SFTCTL_FAILPOINT").is_none()
        && let Some(fp) = failpoint_for_seed(seed)
    {
        let fp = match std::env::var_os("REL_ENOSPC") {
            Some(_) => format!("{fp}:enospc"),
            None => fp,
        };
        let e = std::process::Command::new(std::env::current_exe()?)
            .args(&args[1..])
            .env("SFTCTL_FAILPOINT", fp)
            .env_remove("REL_FAILPOINTS")
            .exec();
        bail!("re-executing with a failpoint: {e}");
    }
    let ack_dir = std::path::PathBuf::from(
        std::env::var_os("REL_ACK_DIR").context("REL_ACK_DIR is not set")?,
    );
    let step_ms: u64 = std::env::var("REL_STEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let run_id = cfg["run_id"].as_str().unwrap_or("unknown").to_owned();
    let mut w = RunWriter::from_env()?;
    let resumed = latest_checkpoint(run_dir)?.map_or(0, |(s, _)| s);
    let attempt = read_jsonl::<Attempt>(&layout::RunDir::at(run_dir).attempts())?
        .0
        .len() as u32
        + 1;
    w.begin_attempt(&Attempt {
        job_id: writer::job_id_from_env().unwrap_or_default(),
        attempt,
        started_at: Timestamp::now(),
        nodes: vec![claim::hostname()],
        world_size: 1,
        provenance: Provenance::default(),
        total_steps: Some(steps),
        total_samples: Some(steps * 8),
        resumed_from_step: resumed,
    })?;
    ack(&ack_dir, &run_id, &format!("attempt {attempt} {resumed}"))?;
    for step in resumed + 1..=steps {
        std::thread::sleep(std::time::Duration::from_millis(step_ms));
        w.metric(&MetricRecord {
            step,
            epoch: step as f64 / steps as f64,
            samples_seen: step * 8,
            tokens: step * 1000,
            loss_tokens: step * 400,
            loss: loss_at(seed, step),
            grad_norm: 1.0,
            lr: 1e-5,
            step_time_s: step_ms as f64 / 1e3,
            tokens_per_s: 1000.0,
            mem_bytes: None,
            at: Timestamp::now(),
        })?;
        ack(&ack_dir, &run_id, &format!("metric {step}"))?;
        w.heartbeat(step)?;
        if step % CHECKPOINT_EVERY == 0 || step == steps {
            let stage = w.checkpoint_staging(step)?;
            fs_err::write(
                stage.join("model.bin"),
                format!("weights@{step}").repeat(64),
            )?;
            fs_err::write(
                stage.join("optimizer.bin"),
                format!("adam@{step}").repeat(64),
            )?;
            w.commit_checkpoint(step, step * 8)?;
            ack(&ack_dir, &run_id, &format!("checkpoint {step}"))?;
        }
    }
    w.write_result(&RunResult {
        status: ResultStatus::Completed,
        job_id: writer::job_id_from_env().unwrap_or_default(),
        final_step: steps,
        samples_seen: steps * 8,
        tokens: steps * 1000,
        final_loss: Some(loss_at(seed, steps)),
        wall_s: 0.0,
        at: Timestamp::now(),
        message: None,
    })?;
    ack(&ack_dir, &run_id, "result")?;
    Ok(())
}
