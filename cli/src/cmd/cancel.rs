//! `sftctl cancel SWEEP | RUN...`: cancels the live jobs of a sweep or of runs, in one
//! `scancel` call; local jobs are marked cancelled and signalled.

use crate::args::CancelArgs;
use crate::cmd::{find_run, resolve_sweep};
use crate::status::{EvalState, RunState, collect, latest};
use sftctl_ledger::evals::latest_eval_jobs;
use sftctl_ledger::{Executor, LocalState, SweepDir, Timestamp, claim::hostname};
use sftctl_slurm::{JobId, Slurm};
use std::collections::BTreeMap;

pub fn run(a: &CancelArgs) -> anyhow::Result<()> {
    let slurm = Slurm::from_env();
    let mut targets: BTreeMap<String, (SweepDir, Vec<String>)> = BTreeMap::new();
    for t in &a.targets {
        if let Some(sw) = resolve_sweep(t, &a.ledger.ledger)? {
            let ids = sw.dir.read_sweep()?.map(|r| r.runs).unwrap_or_default();
            targets
                .entry(sw.dir.name().to_owned())
                .or_insert_with(|| (sw.dir.clone(), Vec::new()))
                .1
                .extend(ids);
        } else {
            let (dir, id) = find_run(&sftctl_ledger::Ledger::at(&a.ledger.ledger), t)?;
            targets
                .entry(dir.name().to_owned())
                .or_insert_with(|| (dir.clone(), Vec::new()))
                .1
                .push(id);
        }
    }
    let mut slurm_jobs = Vec::new();
    let mut n_local = 0;
    for (sweep, ids) in targets.values() {
        let (st, _) = collect(sweep, ids, &slurm, f64::INFINITY)?;
        for s in st
            .iter()
            .filter(|s| !s.state.is_final() && s.state != RunState::Unsubmitted)
        {
            let snap = sftctl_ledger::read_run(sweep.run(&s.run_id).path(), false)?;
            for sub in latest(&snap.submissions) {
                match sub.executor {
                    Executor::Slurm => slurm_jobs.push(sub.job_id.clone()),
                    Executor::Local => {
                        n_local += cancel_local(sweep, &s.run_id, &sub.job_id)?;
                    }
                }
            }
        }
        // Evaluation jobs that have not finished, whatever their run's state.
        for s in &st {
            let subs = sweep.run(&s.run_id).read_eval_submissions()?;
            for e in s
                .evals
                .iter()
                .filter(|e| !e.state.is_final() && e.state != EvalState::Unsubmitted)
            {
                let Some(sub) = latest_eval_jobs(&subs)
                    .into_iter()
                    .find(|x| x.eval == e.name)
                else {
                    continue;
                };
                match sub.executor {
                    Executor::Slurm => slurm_jobs.push(sub.job_id.clone()),
                    Executor::Local => {
                        n_local += cancel_local(sweep, &s.run_id, &sub.job_id)?;
                    }
                }
            }
        }
    }
    let ids: Vec<JobId> = slurm_jobs.iter().filter_map(|j| j.parse().ok()).collect();
    slurm.scancel(&ids)?;
    for j in &slurm_jobs {
        println!("{j}");
    }
    eprintln!(
        "sftctl: cancelled {} Slurm job(s), {n_local} local job(s)",
        ids.len()
    );
    Ok(())
}

pub fn cancel_local(sweep: &SweepDir, run_id: &str, job_id: &str) -> anyhow::Result<usize> {
    let dir = sweep.run(run_id);
    let Some(mut j) = dir.read_local_job(job_id)? else {
        return Ok(0);
    };
    if !matches!(j.state, LocalState::Pending | LocalState::Running) {
        return Ok(0);
    }
    let pid = j.pid;
    j.state = LocalState::Cancelled;
    j.updated_at = Timestamp::now();
    dir.write_local_job(&j)?;
    if let Some(pid) = pid
        && j.host == hostname()
        && let Ok(p) = i32::try_from(pid)
    {
        // The job runs in its own process group; TERM reaches the script and its command.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    println!("{job_id}");
    Ok(1)
}
