//! A run's state from the ledger plus Slurm: one batched `squeue` and at most one batched
//! `sacct` per call of [`collect`], whatever the number of runs. Also the reconciliation of
//! batches that a killed `submit` left as intents.

use serde::Serialize;
use sftctl_ledger::evals::{
    EvalPlacement, EvalSubmission, is_scored, latest_eval_jobs, run_evals, scored_steps,
};
use sftctl_ledger::results::read_checkpoints;
use sftctl_ledger::{
    Batch, BatchState, Executor, LocalState, ResultStatus, RunSnapshot, Submission, SweepDir,
    Timestamp, claim::hostname, read_run,
};
use sftctl_slurm::{Accounting, ArrayPart, JobId, JobState, Slurm};
use std::collections::HashMap;

/// What a user sees for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Unsubmitted,
    Pending,
    Running,
    /// Slurm says running, but the heartbeat is older than the spec's `stale_after_s`.
    Stalled,
    Completing,
    /// Preempted or requeued; it will run again.
    Requeued,
    Suspended,
    Completed,
    Failed,
    /// The loss or the gradient norm turned NaN or infinite: the job stopped itself (exit 3).
    /// Final and not retried: a resume is bit-exact and would diverge again.
    Diverged,
    Cancelled,
    Timeout,
    OutOfMemory,
    NodeFail,
    /// Neither Slurm nor the ledger knows what became of the job (squeue forgot it, no
    /// accounting, no result in the ledger).
    Lost,
}

impl RunState {
    /// No job of this run will run again by itself.
    pub fn is_final(self) -> bool {
        use RunState::*;
        matches!(
            self,
            Completed | Failed | Diverged | Cancelled | Timeout | OutOfMemory | NodeFail | Lost
        )
    }
    /// `submit --retry-failed` resubmits the run.
    pub fn is_retryable(self) -> bool {
        self.is_final() && !matches!(self, RunState::Completed | RunState::Diverged)
    }
    pub fn as_str(self) -> &'static str {
        use RunState::*;
        match self {
            Unsubmitted => "unsubmitted",
            Pending => "pending",
            Running => "running",
            Stalled => "stalled",
            Completing => "completing",
            Requeued => "requeued",
            Suspended => "suspended",
            Completed => "completed",
            Failed => "failed",
            Diverged => "diverged",
            Cancelled => "cancelled",
            Timeout => "timeout",
            OutOfMemory => "out_of_memory",
            NodeFail => "node_fail",
            Lost => "lost",
        }
    }
}

/// Maps a Slurm state (sbatch always uses `--requeue`).
pub fn from_slurm(s: &JobState) -> RunState {
    use JobState as J;
    use RunState::*;
    match s {
        J::Pending | J::Configuring => Pending,
        J::Running | J::Signaling | J::Resizing => Running,
        J::Completing | J::StageOut => Completing,
        J::Completed => Completed,
        J::Failed | J::BootFail | J::Deadline | J::Revoked => Failed,
        J::Cancelled { .. } => Cancelled,
        J::Timeout => Timeout,
        J::OutOfMemory => OutOfMemory,
        J::NodeFail => NodeFail,
        J::Preempted | J::Requeued | J::RequeueFed | J::RequeueHold | J::SpecialExit => Requeued,
        J::Suspended | J::Stopped => Suspended,
        J::Other(_) => Pending,
    }
}

/// What the scheduler says about one job.
#[derive(Debug, Clone, Default)]
pub struct JobView {
    pub state: Option<RunState>,
    /// Slurm's own word (`CANCELLED by 0`, `PENDING`), or the local executor's.
    pub raw: Option<String>,
    pub reason: Option<String>,
}

/// Scheduler answers for many jobs, gathered with one squeue and one sacct call.
#[derive(Debug, Default)]
pub struct SchedulerView {
    pub jobs: HashMap<String, JobView>,
    pub accounting_disabled: bool,
    pub squeue_calls: usize,
    pub sacct_calls: usize,
}

/// Asks Slurm about `job_ids` (`123`, `123_4`): squeue first, sacct for what squeue forgot.
pub fn query_slurm(slurm: &Slurm, job_ids: &[String]) -> anyhow::Result<SchedulerView> {
    let mut view = SchedulerView::default();
    let ids: Vec<JobId> = job_ids.iter().filter_map(|j| j.parse().ok()).collect();
    if ids.is_empty() {
        return Ok(view);
    }
    view.squeue_calls += 1;
    for row in slurm.squeue(&ids)? {
        let jv = JobView {
            state: Some(from_slurm(&row.state)),
            raw: Some(row.state.to_string()),
            reason: row.reason.clone(),
        };
        match &row.job_id.array {
            Some(part @ ArrayPart::Pending(_)) => {
                for t in part.tasks() {
                    view.jobs
                        .insert(JobId::task(row.job_id.job, t).to_string(), jv.clone());
                }
            }
            _ => {
                view.jobs.insert(row.job_id.without_step().to_string(), jv);
            }
        }
    }
    let missing: Vec<JobId> = ids
        .iter()
        .filter(|j| !view.jobs.contains_key(&j.to_string()))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(view);
    }
    view.sacct_calls += 1;
    match slurm.sacct(&missing)? {
        Accounting::Disabled => view.accounting_disabled = true,
        Accounting::Rows(rows) => {
            // The allocation line wins; a `.batch` line stands in when it is missing. A line
            // for tasks that never split off (`97_[0-2]`, `CANCELLED` while pending) stands for
            // each of those tasks that has no line of its own.
            let mut steps: HashMap<String, JobState> = HashMap::new();
            let mut unsplit: Vec<(u64, Vec<u32>, JobState)> = Vec::new();
            for row in rows {
                let key = row.job_id.without_step().to_string();
                match (&row.job_id.step, &row.job_id.array) {
                    (None, Some(part @ ArrayPart::Pending(_))) => {
                        unsplit.push((row.job_id.job, part.tasks(), row.state));
                    }
                    (None, _) => {
                        view.jobs.insert(
                            key,
                            JobView {
                                state: Some(from_slurm(&row.state)),
                                raw: Some(row.state.to_string()),
                                reason: None,
                            },
                        );
                    }
                    (Some(step), _) if step == "batch" => {
                        steps.insert(key, row.state);
                    }
                    _ => {}
                }
            }
            for (k, st) in steps {
                view.jobs.entry(k).or_insert_with(|| JobView {
                    state: Some(from_slurm(&st)),
                    raw: Some(st.to_string()),
                    reason: None,
                });
            }
            for (job, tasks, st) in unsplit {
                for t in tasks {
                    view.jobs
                        .entry(JobId::task(job, t).to_string())
                        .or_insert_with(|| JobView {
                            state: Some(from_slurm(&st)),
                            raw: Some(st.to_string()),
                            reason: None,
                        });
                }
            }
        }
    }
    // An array cancelled before it split into tasks has one accounting line for the whole
    // array (`63`, not `63_0`): it stands for every task. Only a cancellation: a line of another
    // state under the bare id belongs to one task, and a task accounting has not recorded yet
    // must stay unknown, not inherit a sibling's COMPLETED.
    for id in &missing {
        if id.array.is_some()
            && !view.jobs.contains_key(&id.to_string())
            && let Some(whole) = view.jobs.get(&id.job.to_string()).cloned()
            && whole.state == Some(RunState::Cancelled)
        {
            view.jobs.insert(id.to_string(), whole);
        }
    }
    Ok(view)
}

fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| {
        !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
            Err(nix::errno::Errno::ESRCH)
        )
    })
}

/// The local executor's answer for a job.
pub fn local_view(sweep: &SweepDir, run_id: &str, job_id: &str) -> JobView {
    let Ok(Some(j)) = sweep.run(run_id).read_local_job(job_id) else {
        return JobView::default();
    };
    let worker_gone = j.host == hostname() && !pid_alive(j.worker_pid);
    let state = match j.state {
        LocalState::Pending | LocalState::Running if worker_gone => RunState::Lost,
        LocalState::Pending => RunState::Pending,
        LocalState::Running => RunState::Running,
        LocalState::Completed => RunState::Completed,
        LocalState::Failed => RunState::Failed,
        LocalState::Cancelled => RunState::Cancelled,
    };
    JobView {
        state: Some(state),
        raw: Some(format!("{:?}", j.state).to_uppercase()),
        reason: j
            .exit_code
            .filter(|c| *c != 0)
            .map(|c| format!("exit code {c}")),
    }
}

/// One row of `sftctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_id: String,
    pub name: String,
    pub state: RunState,
    pub job_id: Option<String>,
    pub slurm_state: Option<String>,
    pub reason: Option<String>,
    /// Submissions of this run so far (1 = first submit).
    pub attempt: u32,
    pub phase: u32,
    pub step: Option<u64>,
    pub samples_seen: Option<u64>,
    pub total_samples: Option<u64>,
    pub loss: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub eta_s: Option<f64>,
    pub heartbeat_age_s: Option<f64>,
    pub error: Option<String>,
    /// The run's evaluation jobs (one per `[[eval]]` that runs as its own job).
    pub evals: Vec<EvalStatus>,
}

/// What a user sees for an evaluation job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalState {
    Unsubmitted,
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl EvalState {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalState::Unsubmitted => "unsubmitted",
            EvalState::Pending => "pending",
            EvalState::Running => "running",
            EvalState::Done => "done",
            EvalState::Failed => "failed",
            EvalState::Cancelled => "cancelled",
        }
    }
    /// No job of this evaluation will run again by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EvalState::Done | EvalState::Failed | EvalState::Cancelled
        )
    }
    /// `submit --retry-failed` resubmits the evaluation.
    pub fn is_retryable(self) -> bool {
        matches!(self, EvalState::Failed | EvalState::Cancelled)
    }
}

/// One evaluation job of a run in `sftctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalStatus {
    pub name: String,
    pub state: EvalState,
    pub job_id: Option<String>,
    /// Jobs of this evaluation so far (1 = first submit).
    pub attempt: u32,
    pub slurm_state: Option<String>,
    pub reason: Option<String>,
    /// Checkpoint steps this evaluation has scored.
    pub scored_steps: Vec<u64>,
    /// Steps it still has to score among the run's complete checkpoints.
    pub unscored_steps: Vec<u64>,
}

/// Maps what the scheduler says about an evaluation job; the ledger settles a job the
/// scheduler forgot (done when nothing is left to score).
pub fn eval_state(view: &JobView, nothing_left: bool) -> EvalState {
    match view.state {
        None | Some(RunState::Lost) if nothing_left => EvalState::Done,
        None | Some(RunState::Lost) => EvalState::Failed,
        Some(s) => match s {
            RunState::Unsubmitted
            | RunState::Pending
            | RunState::Requeued
            | RunState::Suspended => EvalState::Pending,
            RunState::Running | RunState::Stalled | RunState::Completing => EvalState::Running,
            RunState::Completed => EvalState::Done,
            RunState::Cancelled => EvalState::Cancelled,
            RunState::Failed
            | RunState::Diverged
            | RunState::Timeout
            | RunState::OutOfMemory
            | RunState::NodeFail
            | RunState::Lost => EvalState::Failed,
        },
    }
}

/// The evaluation jobs of a run: the `[[eval]]`s of its `config.json` that run as their own
/// job, and their latest submissions.
pub struct EvalJobs {
    pub names: Vec<String>,
    pub submissions: Vec<EvalSubmission>,
}

/// Reads a run's evaluation jobs from the ledger.
pub fn read_eval_jobs(sweep: &SweepDir, run_id: &str) -> anyhow::Result<EvalJobs> {
    let dir = sweep.run(run_id);
    let mut names: Vec<String> = run_evals(dir.path())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.placement == EvalPlacement::EvalJob)
        .map(|e| e.name)
        .collect();
    let submissions = dir.read_eval_submissions()?;
    for s in &submissions {
        if !names.contains(&s.eval) {
            names.push(s.eval.clone());
        }
    }
    Ok(EvalJobs { names, submissions })
}

/// The state of each evaluation job of a run.
pub fn derive_evals(
    sweep: &SweepDir,
    run_id: &str,
    jobs: &EvalJobs,
    view: &dyn Fn(&EvalSubmission) -> JobView,
) -> Vec<EvalStatus> {
    let dir = sweep.run(run_id);
    let evals = run_evals(dir.path()).unwrap_or_default();
    let steps: Vec<u64> = read_checkpoints(dir.path())
        .unwrap_or_default()
        .iter()
        .map(|c| c.step)
        .collect();
    let latest = latest_eval_jobs(&jobs.submissions);
    jobs.names
        .iter()
        .map(|name| {
            let wanted = evals
                .iter()
                .find(|e| e.name == *name)
                .map_or_else(Vec::new, |e| e.wanted(&steps));
            let unscored: Vec<u64> = wanted
                .iter()
                .copied()
                .filter(|&s| !is_scored(dir.path(), name, s))
                .collect();
            let scored = scored_steps(dir.path(), name).unwrap_or_default();
            let sub = latest.iter().find(|s| s.eval == *name);
            let (state, v) = match sub {
                None => (EvalState::Unsubmitted, JobView::default()),
                Some(s) => {
                    let v = view(s);
                    (eval_state(&v, !steps.is_empty() && unscored.is_empty()), v)
                }
            };
            EvalStatus {
                name: name.clone(),
                state,
                job_id: sub.map(|s| s.job_id.clone()),
                attempt: sub.map_or(0, |s| s.attempt),
                slurm_state: v.raw,
                reason: v.reason,
                scored_steps: scored,
                unscored_steps: unscored,
            }
        })
        .collect()
}

/// The latest submission of each phase (the highest attempt).
pub fn latest(subs: &[Submission]) -> Vec<&Submission> {
    let Some(max) = subs.iter().map(|s| s.attempt).max() else {
        return Vec::new();
    };
    let mut v: Vec<&Submission> = subs.iter().filter(|s| s.attempt == max).collect();
    v.sort_by_key(|s| s.phase);
    v
}

/// Derives a run's status from its snapshot and the scheduler's answers.
pub fn derive(
    run_id: &str,
    name: &str,
    snap: &RunSnapshot,
    jobs: &dyn Fn(&Submission) -> JobView,
    stale_after_s: f64,
) -> RunStatus {
    let subs = latest(&snap.submissions);
    let mut st = RunStatus {
        run_id: run_id.to_owned(),
        name: name.to_owned(),
        state: RunState::Unsubmitted,
        job_id: None,
        slurm_state: None,
        reason: None,
        attempt: subs.first().map_or(0, |s| s.attempt),
        phase: 0,
        step: snap.last_metric.as_ref().map(|m| m.step),
        samples_seen: snap.last_metric.as_ref().map(|m| m.samples_seen),
        total_samples: snap.last_attempt.as_ref().and_then(|a| a.total_samples),
        loss: snap.last_metric.as_ref().map(|m| m.loss),
        grad_norm: snap.last_metric.as_ref().map(|m| m.grad_norm),
        tokens_per_s: snap.last_metric.as_ref().map(|m| m.tokens_per_s),
        eta_s: None,
        heartbeat_age_s: snap.heartbeat.as_ref().map(|h| h.at.age_s()),
        evals: Vec::new(),
        error: snap
            .errors
            .last()
            .map(|e| match &e.kind {
                // A multi-rank job's messages name their rank (or the lost one) already.
                sftctl_ledger::EventKind::Error { message } if message.starts_with("rank ") => {
                    message.clone()
                }
                sftctl_ledger::EventKind::Error { message } => {
                    format!("rank {}: {message}", e.rank)
                }
                _ => String::new(),
            })
            .or_else(|| snap.unreadable.first().cloned()),
    };
    for (i, s) in subs.iter().enumerate() {
        let v = jobs(s);
        st.job_id = Some(s.job_id.clone());
        st.phase = s.phase;
        st.slurm_state = v.raw.clone();
        st.reason = v.reason.clone();
        st.state = v.state.unwrap_or(RunState::Lost);
        let last = i + 1 == subs.len();
        if st.state != RunState::Completed || last {
            break;
        }
    }
    // The ledger settles what the scheduler cannot tell, and a job's own verdict of failure wins
    // over an exit status of 0.
    if let Some(r) = &snap.result {
        match (r.status, st.state) {
            (ResultStatus::Completed, RunState::Lost) => st.state = RunState::Completed,
            (ResultStatus::Diverged, RunState::Lost | RunState::Completed | RunState::Failed) => {
                st.state = RunState::Diverged;
                st.error = st.error.clone().or_else(|| r.message.clone());
            }
            (ResultStatus::Failed, RunState::Lost | RunState::Completed) => {
                st.state = RunState::Failed;
                st.error = st.error.clone().or_else(|| r.message.clone());
            }
            _ => {}
        }
    } else if st.state == RunState::Lost && !snap.errors.is_empty() {
        st.state = RunState::Failed;
    }
    // Neither squeue nor sacct reports the job, but its own heartbeat is fresh: it is alive.
    // Calling it lost would let `submit --retry-failed` run the point a second time.
    if st.state == RunState::Lost
        && snap.result.is_none()
        && let Some(h) = &snap.heartbeat
        && h.job_id.is_some()
        && h.job_id == st.job_id
        && h.at.age_s() <= stale_after_s
    {
        st.state = RunState::Running;
        st.reason = Some("not reported by squeue or sacct; heartbeat fresh".into());
    }
    if st.state == RunState::Running && st.heartbeat_age_s.is_some_and(|a| a > stale_after_s) {
        st.state = RunState::Stalled;
    }
    if let (Some(m), Some(a)) = (&snap.last_metric, &snap.last_attempt)
        && let Some(total) = a.total_steps
        && !st.state.is_final()
    {
        st.eta_s = Some(total.saturating_sub(m.step) as f64 * m.step_time_s);
    }
    st
}

/// Name Slurm knows a batch by: it carries the batch token for reconciliation.
pub fn batch_job_name(sweep: &str, token: &str) -> String {
    format!("sft.{sweep}.{token}")
}

/// Settles batches left as intents by a submit that died between `sbatch` and the ledger write:
/// a job found by name is recorded, else the intent is voided. The caller holds the sweep's
/// submit claim. Returns how many intents were settled.
pub fn reconcile(sweep: &SweepDir, slurm: &Slurm) -> anyhow::Result<usize> {
    let intents: Vec<Batch> = sweep
        .read_batches()?
        .into_iter()
        .filter(|b| b.state == BatchState::Intent)
        .collect();
    if intents.is_empty() {
        return Ok(0);
    }
    let slurm_names: Vec<String> = intents
        .iter()
        .filter(|b| b.executor == Executor::Slurm)
        .map(|b| batch_job_name(sweep.name(), &b.token))
        .collect();
    let mut found: HashMap<String, u64> = HashMap::new();
    if !slurm_names.is_empty() {
        for row in slurm.squeue_by_name(&slurm_names)? {
            found.insert(row.name, row.job_id.job);
        }
        if found.len() < slurm_names.len()
            && let Accounting::Rows(rows) = slurm.sacct_by_name(&slurm_names, "now-30days")?
        {
            for row in rows {
                found.entry(row.name).or_insert(row.job_id.job);
            }
        }
    }
    for mut b in intents {
        let name = batch_job_name(sweep.name(), &b.token);
        match found.get(&name) {
            Some(&job) => {
                eprintln!(
                    "sftctl: reconciled batch {} with Slurm job {job} (found by name `{name}`)",
                    b.token
                );
                let array = b.argv.iter().any(|a| a.starts_with("--array"));
                record_submitted(sweep, &mut b, job, array)?;
            }
            None => {
                b.state = BatchState::Void;
                sweep.write_batch(&b)?;
            }
        }
    }
    Ok(found.len())
}

/// Marks a batch submitted as `job` and appends a submission to each of its runs.
pub fn record_submitted(
    sweep: &SweepDir,
    b: &mut Batch,
    job: u64,
    array: bool,
) -> anyhow::Result<()> {
    for (i, e) in b.entries.iter().enumerate() {
        let run = sweep.run(&e.run_id);
        let job_id = if array {
            format!("{job}_{i}")
        } else {
            job.to_string()
        };
        if let Some(eval) = &e.eval {
            let attempt = run
                .read_eval_submissions()?
                .iter()
                .filter(|s| s.eval == *eval)
                .count() as u32
                + 1;
            run.append_eval_submission(&EvalSubmission {
                eval: eval.clone(),
                job_id,
                batch: b.token.clone(),
                attempt,
                executor: b.executor,
                submitted_at: Timestamp::now(),
                depends_on: b.depends_on.first().cloned(),
            })?;
            continue;
        }
        let attempt = run
            .read_submissions()?
            .iter()
            .filter(|s| s.phase == e.phase)
            .count() as u32
            + 1;
        run.append_submission(&Submission {
            job_id,
            batch: b.token.clone(),
            phase: e.phase,
            attempt,
            executor: b.executor,
            submitted_at: Timestamp::now(),
            depends_on: b.depends_on.first().cloned(),
        })?;
    }
    b.job_id = Some(job.to_string());
    b.state = BatchState::Submitted;
    sweep.write_batch(b)?;
    Ok(())
}

/// Statuses of the runs `run_ids` of a sweep: reads each run's snapshot, then asks Slurm once.
pub fn collect(
    sweep: &SweepDir,
    run_ids: &[String],
    slurm: &Slurm,
    stale_after_s: f64,
) -> anyhow::Result<(Vec<RunStatus>, SchedulerView)> {
    let mut snaps = Vec::with_capacity(run_ids.len());
    let mut eval_jobs = Vec::with_capacity(run_ids.len());
    let mut slurm_jobs = Vec::new();
    for id in run_ids {
        let snap = read_run(sweep.run(id).path(), false)?;
        for s in latest(&snap.submissions) {
            if s.executor == Executor::Slurm {
                slurm_jobs.push(s.job_id.clone());
            }
        }
        let ej = read_eval_jobs(sweep, id)?;
        for s in latest_eval_jobs(&ej.submissions) {
            if s.executor == Executor::Slurm {
                slurm_jobs.push(s.job_id.clone());
            }
        }
        snaps.push(snap);
        eval_jobs.push(ej);
    }
    let view = query_slurm(slurm, &slurm_jobs)?;
    let out = run_ids
        .iter()
        .zip(&snaps)
        .zip(&eval_jobs)
        .map(|((id, snap), ej)| {
            let name = snap
                .record
                .as_ref()
                .map_or_else(|| id.clone(), |r| r.name.clone());
            let jobs = |s: &Submission| match s.executor {
                Executor::Slurm => view.jobs.get(&s.job_id).cloned().unwrap_or_default(),
                Executor::Local => local_view(sweep, id, &s.job_id),
            };
            let mut st = derive(id, &name, snap, &jobs, stale_after_s);
            let eval_view = |s: &EvalSubmission| match s.executor {
                Executor::Slurm => view.jobs.get(&s.job_id).cloned().unwrap_or_default(),
                Executor::Local => local_view(sweep, id, &s.job_id),
            };
            st.evals = derive_evals(sweep, id, ej, &eval_view);
            st
        })
        .collect();
    Ok((out, view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sftctl_ledger::*;

    fn sub(job: &str, phase: u32, attempt: u32) -> Submission {
        Submission {
            job_id: job.into(),
            batch: "b".into(),
            phase,
            attempt,
            executor: Executor::Slurm,
            submitted_at: Timestamp::now(),
            depends_on: None,
        }
    }

    fn result(status: ResultStatus) -> RunResult {
        RunResult {
            status,
            job_id: "1".into(),
            final_step: 3,
            samples_seen: 24,
            tokens: 100,
            final_loss: Some(1.0),
            wall_s: 1.0,
            at: Timestamp::now(),
            message: None,
        }
    }

    /// Stand-in squeue/sacct printing what Slurm printed in these situations (captured on the
    /// test cluster): one call each, and every id resolved.
    #[test]
    fn scheduler_answers_for_arrays_steps_and_unsplit_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.path().join(name);
            fs_err::write(
                &p,
                format!(
                    "#!/bin/sh\necho {name} >> {}/calls\ncat <<'X'\n{body}X\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .unwrap();
        };
        script(
            "squeue",
            "12_[2-3%1]|PENDING|JobArrayTaskLimit|0:00||sft.s.a\n12_1|RUNNING|None|0:03|n1|sft.s.a\n13|COMPLETING|None|0:09|n2|sft.s.b\n",
        );
        script(
            "sacct",
            "97_0|CANCELLED by 1001|0:0|00:00:00|n1|sft.s.c\n97_0.batch|FAILED|15:0|00:00:00|n1|batch\n97_[0-2]|CANCELLED by 1001|0:0|00:00:00|None assigned|sft.s.c\n63|CANCELLED by 0|0:0|00:00:00|None assigned|sft.s.d\n70.batch|FAILED|1:0|00:00:01|n1|batch\n",
        );
        let mut slurm = Slurm::default();
        slurm.bin_dir = Some(dir.path().to_owned());
        let ids: Vec<String> = [
            "12_1", "12_2", "12_3", "13", "97_0", "97_2", "63_1", "70", "71",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let v = query_slurm(&slurm, &ids).unwrap();
        let st = |id: &str| v.jobs.get(id).and_then(|j| j.state);
        use RunState::*;
        let table: &[(&str, Option<RunState>)] = &[
            ("12_1", Some(Running)),
            ("12_2", Some(Pending)),
            ("12_3", Some(Pending)),
            ("13", Some(Completing)),
            ("97_0", Some(Cancelled)),
            ("97_2", Some(Cancelled)),
            ("63_1", Some(Cancelled)),
            ("70", Some(Failed)),
            ("71", None),
        ];
        for (id, want) in table {
            assert_eq!(st(id), *want, "{id}");
        }
        assert_eq!(v.jobs["12_2"].reason.as_deref(), Some("JobArrayTaskLimit"));
        assert_eq!(v.jobs["97_2"].raw.as_deref(), Some("CANCELLED by 1001"));
        let calls = fs_err::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls, "squeue\nsacct\n");
    }

    #[test]
    fn derivation_table() {
        use RunState::*;
        let js = |s: &str| JobView {
            state: Some(from_slurm(&JobState::parse(s))),
            raw: Some(s.into()),
            reason: None,
        };
        let none = JobView::default;
        // (submissions, scheduler answer per job id, ledger result, stale heartbeat, want)
        type Case = (
            Vec<Submission>,
            Vec<(&'static str, JobView)>,
            Option<ResultStatus>,
            bool,
            RunState,
        );
        let table: Vec<Case> = vec![
            (vec![], vec![], None, false, Unsubmitted),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("PENDING"))],
                None,
                false,
                Pending,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("RUNNING"))],
                None,
                false,
                Running,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("RUNNING"))],
                None,
                true,
                Stalled,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("COMPLETING"))],
                None,
                false,
                Completing,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("COMPLETED"))],
                None,
                false,
                Completed,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("COMPLETED"))],
                Some(ResultStatus::Diverged),
                false,
                Diverged,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("FAILED"))],
                Some(ResultStatus::Diverged),
                false,
                Diverged,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("CANCELLED by 0"))],
                None,
                false,
                Cancelled,
            ),
            (
                vec![sub("1", 0, 1)],
                vec![("1", js("PREEMPTED"))],
                None,
                false,
                Requeued,
            ),
            (vec![sub("1", 0, 1)], vec![("1", none())], None, false, Lost),
            (
                vec![sub("1", 0, 1)],
                vec![("1", none())],
                Some(ResultStatus::Completed),
                false,
                Completed,
            ),
            (
                vec![sub("1", 0, 1), sub("2", 0, 2)],
                vec![("1", js("FAILED")), ("2", js("RUNNING"))],
                None,
                false,
                Running,
            ),
            (
                vec![sub("1", 1, 1), sub("2", 2, 1)],
                vec![("1", js("COMPLETED")), ("2", js("PENDING"))],
                None,
                false,
                Pending,
            ),
            (
                vec![sub("1", 1, 1), sub("2", 2, 1)],
                vec![("1", js("FAILED")), ("2", js("PENDING"))],
                None,
                false,
                Failed,
            ),
            (
                vec![sub("1", 1, 1), sub("2", 2, 1)],
                vec![("1", js("COMPLETED")), ("2", js("COMPLETED"))],
                None,
                false,
                Completed,
            ),
        ];
        for (i, (subs, jobs, res, stale, want)) in table.into_iter().enumerate() {
            let snap = RunSnapshot {
                submissions: subs,
                result: res.map(result),
                heartbeat: stale.then(|| Heartbeat {
                    at: Timestamp(Timestamp::now().0 - time::Duration::hours(1)),
                    rank: 0,
                    step: 1,
                    pid: 1,
                    host: "h".into(),
                    job_id: None,
                }),
                ..Default::default()
            };
            let map: HashMap<&str, JobView> = jobs.into_iter().collect();
            let f = |s: &Submission| map.get(s.job_id.as_str()).cloned().unwrap_or_default();
            assert_eq!(derive("r", "n", &snap, &f, 600.0).state, want, "case {i}");
        }
    }
}
