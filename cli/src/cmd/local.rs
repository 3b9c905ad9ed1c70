//! The local executor: runs a batch's scripts as local processes, at most `parallel` at a time,
//! recording each job's state in the ledger as Slurm would know it. `submit` starts it detached
//! (`setsid`), so the shell is not blocked; `--wait` runs it in the foreground.

use crate::args::LocalWorkerArgs;
use anyhow::Context;
use sftctl_ledger::{Batch, Ledger, LocalJob, LocalState, SweepDir, Timestamp, claim::hostname};
use std::collections::VecDeque;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `sftctl local-worker` in its own session, detached from the terminal.
pub fn spawn_worker(
    sweep: &SweepDir,
    token: &str,
    parallel: usize,
    log: &Path,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the sftctl executable")?;
    let out = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let ledger_root = sweep
        .path()
        .parent()
        .and_then(Path::parent)
        .context("sweep directory has no ledger root")?;
    // A long-lived detached child cannot go through the capture-everything command wrapper.
    #[allow(clippy::disallowed_methods)]
    let child = Command::new("setsid")
        .arg(exe)
        .arg("local-worker")
        .arg("--ledger")
        .arg(ledger_root)
        .args([
            "--sweep",
            sweep.name(),
            "--batch",
            token,
            "--parallel",
            &parallel.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?.into_parts().0)
        .stderr(out.into_parts().0)
        .spawn()
        .context("running `setsid`")?;
    eprintln!(
        "sftctl: local worker pid {} runs batch {token} ({parallel} at a time)",
        child.id()
    );
    Ok(())
}

/// `sftctl local-worker`.
pub fn worker(a: &LocalWorkerArgs) -> anyhow::Result<()> {
    let sweep = Ledger::at(&a.ledger).sweep(&a.sweep);
    run_batch(&sweep, &a.batch, a.parallel)
}

/// `(entry index, run id, phase, evaluation)`.
type Entry = (usize, String, u32, Option<String>);

struct Slot {
    /// Remaining entries of this run: its phases in order, then its evaluations.
    rest: VecDeque<Entry>,
    /// The running entry: its index, run id, phase, evaluation, the process.
    current: Option<(usize, String, u32, Option<String>, Child)>,
}

fn update(
    sweep: &SweepDir,
    run_id: &str,
    job_id: &str,
    f: impl FnOnce(&mut LocalJob),
) -> anyhow::Result<LocalJob> {
    let dir = sweep.run(run_id);
    let mut j = dir
        .read_local_job(job_id)?
        .with_context(|| format!("no local job `{job_id}` in run `{run_id}`"))?;
    f(&mut j);
    j.updated_at = Timestamp::now();
    dir.write_local_job(&j)?;
    Ok(j)
}

fn start(
    sweep: &SweepDir,
    token: &str,
    idx: usize,
    run_id: &str,
    phase: u32,
    eval: Option<&str>,
) -> anyhow::Result<Option<Child>> {
    let job_id = format!("local-{token}-{idx}");
    let dir = sweep.run(run_id);
    if dir
        .read_local_job(&job_id)?
        .is_some_and(|j| j.state == LocalState::Cancelled)
    {
        return Ok(None);
    }
    let log = match eval {
        None => dir.logs().join(format!("{job_id}.out")),
        Some(e) => dir.logs().join(format!("eval-{e}-{job_id}.out")),
    };
    let script = match eval {
        None => dir.script(phase),
        Some(e) => dir.eval_script(e),
    };
    fs_err::create_dir_all(dir.logs())?;
    let out = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    #[allow(clippy::disallowed_methods)] // a long-running job, not a captured command
    let child = Command::new("bash")
        .arg(&script)
        .current_dir(dir.path())
        .env("SFTCTL_JOB_ID", &job_id)
        .env("SFTCTL_RUN_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?.into_parts().0)
        .stderr(out.into_parts().0)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting `bash {}`", script.display()))?;
    let pid = child.id();
    update(sweep, run_id, &job_id, |j| {
        j.state = LocalState::Running;
        j.pid = Some(pid);
        j.worker_pid = std::process::id();
    })?;
    Ok(Some(child))
}

/// The trainer's "stopped after a checkpoint, requeue me" status (`EX_TEMPFAIL`, docs/training.md).
const REQUEUE_EXIT: u8 = 75;

/// Requeues a local job has before an exit 75 counts as a failure (Slurm bounds requeues too;
/// a job that asks this often is being stopped by something that will not go away).
const MAX_REQUEUES: u32 = 100;

/// A job exited 75: unless it was cancelled or has used up its requeues, start its script again
/// (the trainer resumes from the checkpoint it just wrote), as Slurm does for `scontrol requeue`.
fn requeue(
    sweep: &SweepDir,
    token: &str,
    idx: usize,
    run_id: &str,
    phase: u32,
) -> anyhow::Result<Option<Child>> {
    let job_id = format!("local-{token}-{idx}");
    let Some(j) = sweep.run(run_id).read_local_job(&job_id)? else {
        return Ok(None);
    };
    if j.state == LocalState::Cancelled || j.requeues >= MAX_REQUEUES {
        return Ok(None);
    }
    let n = j.requeues + 1;
    update(sweep, run_id, &job_id, |j| {
        j.state = LocalState::Pending;
        j.requeues = n;
        j.exit_code = Some(i32::from(REQUEUE_EXIT));
    })?;
    eprintln!("sftctl: {job_id}: exit {REQUEUE_EXIT}, requeue {n} of at most {MAX_REQUEUES}");
    start(sweep, token, idx, run_id, phase, None)
}

/// Runs every entry of a local batch; returns when all are done.
pub fn run_batch(sweep: &SweepDir, token: &str, parallel: usize) -> anyhow::Result<()> {
    let path = sweep.batch_path(token);
    let batch: Batch = sftctl_ledger::io::read_json(&path)?
        .with_context(|| format!("no batch `{}`", path.display()))?;
    let me = std::process::id();
    let host = hostname();
    let mut queue: VecDeque<Slot> = VecDeque::new();
    for (i, e) in batch.entries.iter().enumerate() {
        let job_id = format!("local-{token}-{i}");
        update(sweep, &e.run_id, &job_id, |j| {
            j.worker_pid = me;
            j.host = host.clone();
        })?;
        let entry = (i, e.run_id.clone(), e.phase, e.eval.clone());
        match queue.back_mut() {
            Some(s) if s.rest.back().is_some_and(|(_, r, _, _)| *r == e.run_id) => {
                s.rest.push_back(entry)
            }
            _ => queue.push_back(Slot {
                rest: VecDeque::from([entry]),
                current: None,
            }),
        }
    }
    let mut running: Vec<Slot> = Vec::new();
    loop {
        while running.len() < parallel.max(1) {
            let Some(slot) = queue.pop_front() else { break };
            running.push(slot);
        }
        if running.is_empty() {
            return Ok(());
        }
        for slot in &mut running {
            if slot.current.is_none() {
                while let Some((i, run, phase, eval)) = slot.rest.pop_front() {
                    if let Some(child) = start(sweep, token, i, &run, phase, eval.as_deref())? {
                        slot.current = Some((i, run, phase, eval, child));
                        break;
                    }
                }
                continue;
            }
            let (i, run, phase, eval, child) = slot.current.as_mut().expect("checked");
            if let Some(status) = child.try_wait()? {
                let job_id = format!("local-{token}-{i}");
                if status.code() == Some(i32::from(REQUEUE_EXIT))
                    && eval.is_none()
                    && let Some(again) = requeue(sweep, token, *i, run, *phase)?
                {
                    *child = again;
                    continue;
                }
                let ok = status.success();
                update(sweep, run, &job_id, |j| {
                    if j.state != LocalState::Cancelled {
                        j.state = if ok {
                            LocalState::Completed
                        } else {
                            LocalState::Failed
                        };
                    }
                    j.exit_code = status.code();
                    j.signal = status.signal().map(|s| s.to_string());
                })?;
                if !ok && eval.is_none() {
                    // Later phases and the evaluations of a failed run do not start (as with
                    // `afterok`); a failed evaluation stops nothing.
                    for (k, r, _, _) in slot.rest.drain(..) {
                        update(sweep, &r, &format!("local-{token}-{k}"), |j| {
                            j.state = LocalState::Cancelled
                        })?;
                    }
                }
                slot.current = None;
            }
        }
        running.retain(|s| s.current.is_some() || !s.rest.is_empty());
        std::thread::sleep(Duration::from_millis(100));
    }
}
