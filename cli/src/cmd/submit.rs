//! `sftctl submit`: plan, check with `sbatch --test-only`, then under the sweep's claim reconcile,
//! write the ledger and submit what is new (or failed, with `--retry-failed`). Submit-and-exit.
//!
//! Crash safety: a batch is written as an intent before `sbatch` and completed after; the job
//! name carries the batch token, so a submit killed in between is reconciled by the next one.

use crate::args::{ExecutorArg, SubmitArgs};
use crate::plan::{Plan, VERSION, build};
use crate::quote::shell_quote;
use crate::spec::Spec;
use crate::status::{RunState, batch_job_name, collect, latest, reconcile, record_submitted};
use crate::{UserError, user_err};
use anyhow::Context;
use sftctl_ledger::evals::{EvalPlacement, EvalSubmission, eval_script_name, latest_eval_jobs};
use sftctl_ledger::{
    Batch, BatchEntry, BatchState, Claim, Executor, Ledger, LocalJob, LocalState, PhaseInfo,
    Resources, RunRecord, Submission, SweepDir, SweepRecord, Timestamp, claim::hostname,
    io::sha256_file, layout::script_name,
};
use sftctl_slurm::Slurm;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arrays larger than this are split (Slurm's default `MaxArraySize` is 1001).
const MAX_ARRAY: usize = 1000;
/// How long a submit waits for another submit of the same sweep, and when a claim from another
/// host counts as abandoned.
const CLAIM_WAIT: Duration = Duration::from_secs(600);

/// A new batch token: unique per `sbatch` call.
pub fn new_token() -> String {
    use sha2::{Digest, Sha256};
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{}-{}",
        hostname(),
        std::process::id(),
        Timestamp::now().0.unix_timestamp_nanos(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    hex::encode(Sha256::digest(seed.as_bytes()))[..10].to_owned()
}

/// Finds the runtime binary: a path (relative to the spec), or a name looked up first beside the
/// running `sftctl` (where `cargo build` and an install put both binaries), then on `PATH`.
fn resolve_binary(name: &str, spec_dir: &Path) -> anyhow::Result<PathBuf> {
    if name.contains('/') {
        let p = spec_dir.join(name);
        if p.is_file() {
            return Ok(std::path::absolute(&p)?);
        }
        return user_err(format!(
            "runtime binary `{}` does not exist\nhint: set `run.binary` in the spec, or build it",
            p.display()
        ));
    }
    let beside_sftctl = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file());
    if let Some(p) = beside_sftctl {
        return Ok(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    user_err(format!(
        "runtime binary `{name}` is neither beside `sftctl` nor on PATH\nhint: build it (`cargo build --release`), or set `run.binary` in the spec to its path"
    ))
}

pub fn run(a: &SubmitArgs) -> anyhow::Result<()> {
    let spec = Spec::load(&a.spec)?;
    let executor = match a.executor {
        Some(ExecutorArg::Local) => Executor::Local,
        Some(ExecutorArg::Slurm) => Executor::Slurm,
        None if spec.executor.as_deref() == Some("local") => Executor::Local,
        None => Executor::Slurm,
    };
    let spec_text = spec.source.text.clone();
    let root = std::path::absolute(&spec.ledger)?;
    let sweep_dir = Ledger::at(&root).sweep(&spec.name);
    // The ledger copy of the runtime binary is named by its hash, known before copying.
    let binary = match &spec.binary {
        Some(b) => {
            let src = resolve_binary(b, &spec.dir)?;
            let sha = sha256_file(&src)?;
            let file = src
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dest = sweep_dir.path().join("bin").join(&sha).join(file);
            Some((src, dest))
        }
        None => None,
    };
    let plan = build(
        spec,
        binary.as_ref().map(|(_, d)| d.to_string_lossy()).as_deref(),
    )?;
    let slurm = Slurm::from_env();
    if executor == Executor::Slurm {
        test_only(&plan, &slurm)?;
    }

    let ledger = Ledger::create(&root, &format!("sftctl {VERSION}"))?;
    let sweep = ledger.sweep(&plan.spec.name);
    let _claim = Claim::acquire(&sweep.lock_path(), CLAIM_WAIT, CLAIM_WAIT).map_err(|e| {
        UserError(format!(
            "{e}\nhint: another `sftctl submit` of this sweep is running"
        ))
    })?;
    let settled = reconcile(&sweep, &slurm)?;
    if settled > 0 {
        eprintln!("sftctl: {settled} interrupted submission(s) found in Slurm and recorded");
    }

    // What to submit: new runs, and with --retry-failed the runs whose last job failed.
    let ids: Vec<String> = plan.runs.iter().map(|r| r.id.clone()).collect();
    let (statuses, _) = collect(&sweep, &ids, &slurm, plan.spec.stale_after_s as f64)?;
    let todo: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| s.attempt == 0 || (a.retry_failed && s.state.is_retryable()))
        .map(|(i, _)| i)
        .collect();
    let skipped = plan.runs.len() - todo.len();

    // Evaluation jobs of runs not (re)submitted for training: never submitted (a new `[[eval]]`,
    // or a submit killed between the training and the evaluation sbatch), or failed with
    // `--retry-failed`. A run whose training failed gets its evaluations with its retry.
    let names = eval_jobs(&plan);
    let mut eval_todo: Vec<EvalTodo> = Vec::new();
    // Live evaluation jobs of runs whose training is resubmitted: they wait for the failed job
    // (`DependencyNeverSatisfied`) and are replaced.
    let mut stale: Vec<(String, EvalSubmission)> = Vec::new();
    for (i, st) in statuses.iter().enumerate() {
        let run = sweep.run(&st.run_id);
        if todo.contains(&i) {
            let subs = run.read_eval_submissions()?;
            for e in st
                .evals
                .iter()
                .filter(|e| !e.state.is_final() && e.state != crate::status::EvalState::Unsubmitted)
            {
                if let Some(sub) = latest_eval_jobs(&subs)
                    .into_iter()
                    .find(|s| s.eval == e.name)
                {
                    stale.push((st.run_id.clone(), sub.clone()));
                }
            }
            continue;
        }
        for name in &names {
            let state = st
                .evals
                .iter()
                .find(|e| e.name == *name)
                .map_or(crate::status::EvalState::Unsubmitted, |e| e.state);
            let go = state == crate::status::EvalState::Unsubmitted
                || (a.retry_failed && state.is_retryable());
            if !go {
                continue;
            }
            let after = match st.state {
                RunState::Completed => None,
                s if s.is_final() || s == RunState::Unsubmitted => continue,
                _ if executor == Executor::Local => continue,
                _ => match latest(&run.read_submissions()?).last() {
                    Some(sub) => Some(sub.job_id.clone()),
                    None => continue,
                },
            };
            eval_todo.push(EvalTodo {
                run: i,
                eval: name.clone(),
                after,
            });
        }
    }

    // Ledger records: the sweep, the spec text, the runtime copy, each run to submit.
    let mut record = sweep.read_sweep()?.unwrap_or_else(|| SweepRecord {
        format_version: sftctl_ledger::FORMAT_VERSION,
        name: plan.spec.name.clone(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
        spec_sha256: String::new(),
        executor,
        runtimes: Vec::new(),
        runs: Vec::new(),
    });
    if let Some((src, _)) = &binary
        && !(todo.is_empty() && eval_todo.is_empty())
    {
        let rb = sweep.store_runtime(src)?;
        if !record.runtimes.iter().any(|r| r.sha256 == rb.sha256) {
            record.runtimes.push(rb);
        }
    }
    {
        use sha2::{Digest, Sha256};
        record.spec_sha256 = hex::encode(Sha256::digest(spec_text.as_bytes()));
    }
    record.updated_at = Timestamp::now();
    record.executor = executor;
    let known: BTreeSet<String> = record.runs.iter().cloned().collect();
    record
        .runs
        .extend(ids.iter().filter(|i| !known.contains(*i)).cloned());
    sweep.write_spec(&spec_text)?;
    sweep.write_sweep(&record)?;
    let s = &plan.spec.slurm;
    for &i in &todo {
        let r = &plan.runs[i];
        let dir = sweep.run(&r.id);
        dir.write_run(&RunRecord {
            format_version: sftctl_ledger::FORMAT_VERSION,
            run_id: r.id.clone(),
            name: r.name.clone(),
            sweep: plan.spec.name.clone(),
            identity: r.identity.clone(),
            resources: Resources {
                nodes: s.nodes,
                gpus_per_node: s.gpus_per_node,
                cpus_per_task: s.cpus_per_task,
                time_limit_s: s.time_s,
            },
            phases: r
                .scripts
                .iter()
                .map(|(p, _)| PhaseInfo {
                    phase: *p,
                    script: script_name(*p),
                })
                .collect(),
            created_at: Timestamp::now(),
            sftctl_version: VERSION.into(),
        })?;
        dir.write_config(&r.config)?;
        for (phase, text) in &r.scripts {
            dir.write_script(*phase, text)?;
        }
        for (eval, text) in &r.eval_scripts {
            dir.write_eval_script(eval, text)?;
        }
    }
    // Runs submitted before take the spec's evaluations as they are now: the trainer keeps
    // weights for them and the evaluation jobs read them from `config.json`.
    for (i, r) in plan.runs.iter().enumerate() {
        if todo.contains(&i) {
            continue;
        }
        let dir = sweep.run(&r.id);
        let Some(mut config) =
            sftctl_ledger::io::read_json::<serde_json::Value>(&dir.config_json())?
        else {
            continue;
        };
        let none = serde_json::json!([]);
        if config.get("evals").unwrap_or(&none) != &r.config["evals"] {
            config["evals"] = r.config["evals"].clone();
            dir.write_config(&config)?;
        }
        if eval_todo.iter().any(|t| t.run == i) {
            for (eval, text) in &r.eval_scripts {
                dir.write_eval_script(eval, text)?;
            }
        }
    }
    cancel_stale(&sweep, &slurm, &stale)?;

    let mut lines = Vec::new();
    // Jobs submitted before a refusal are printed too, then the refusal is reported.
    let outcome = match (todo.is_empty() && eval_todo.is_empty(), executor) {
        (true, _) => Ok(()),
        (false, Executor::Slurm) => {
            submit_slurm(&plan, &sweep, &slurm, &todo, &eval_todo, &mut lines)
        }
        (false, Executor::Local) => {
            submit_local(&plan, &sweep, &todo, &eval_todo, a.wait, &mut lines)
        }
    };
    drop(_claim);
    let mut out = std::io::stdout().lock();
    if a.json {
        let runs: Vec<_> = lines
            .iter()
            .map(|(job, id, name, eval)| match eval {
                None => serde_json::json!({"job_id": job, "run_id": id, "name": name}),
                Some(e) => {
                    serde_json::json!({"job_id": job, "run_id": id, "name": name, "eval": e})
                }
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"sweep": plan.spec.name, "submitted": runs, "skipped": skipped}),
        )?;
        writeln!(out)?;
    } else {
        for (job, id, name, eval) in &lines {
            match eval {
                None => writeln!(out, "{job}\t{id}\t{name}")?,
                Some(e) => writeln!(out, "{job}\t{id}\t{name}\teval:{e}")?,
            }
        }
    }
    outcome?;
    eprintln!(
        "sftctl: sweep `{}`: {} job(s) submitted, {skipped} run(s) already submitted{}",
        plan.spec.name,
        lines.len(),
        if a.retry_failed {
            " and not failed"
        } else {
            ""
        }
    );
    if executor == Executor::Local && a.wait {
        let (st, _) = collect(&sweep, &ids, &slurm, 1e9)?;
        let bad = st
            .iter()
            .filter(|s| s.state != crate::status::RunState::Completed)
            .count();
        if bad > 0 {
            return user_err(format!(
                "{bad} run(s) did not complete; see `sftctl status`"
            ));
        }
        let bad_evals = st
            .iter()
            .flat_map(|s| &s.evals)
            .filter(|e| e.state != crate::status::EvalState::Done)
            .count();
        if bad_evals > 0 {
            return user_err(format!(
                "{bad_evals} evaluation job(s) did not finish; see `sftctl status`"
            ));
        }
    }
    Ok(())
}

/// Cancels evaluation jobs that wait for a training job being replaced.
fn cancel_stale(
    sweep: &SweepDir,
    slurm: &Slurm,
    stale: &[(String, EvalSubmission)],
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for (run, sub) in stale {
        match sub.executor {
            Executor::Slurm => ids.extend(sub.job_id.parse::<sftctl_slurm::JobId>().ok()),
            Executor::Local => {
                crate::cmd::cancel::cancel_local(sweep, run, &sub.job_id)?;
            }
        }
    }
    if !ids.is_empty() {
        slurm.scancel(&ids)?;
        eprintln!(
            "sftctl: cancelled {} evaluation job(s) waiting for the failed training job(s)",
            ids.len()
        );
    }
    Ok(())
}

/// `sbatch --test-only` of the first script, before the ledger is touched, so that a refusal
/// (unknown partition, QOS, time limit) leaves the ledger as it was.
fn test_only(plan: &Plan, slurm: &Slurm) -> anyhow::Result<()> {
    let Some(r) = plan.runs.first() else {
        return Ok(());
    };
    let scripts = std::iter::once(("the sweep's jobs".to_owned(), &r.scripts[0].1)).chain(
        r.eval_scripts
            .iter()
            .map(|(e, t)| (format!("the jobs of evaluation `{e}`"), t)),
    );
    for (what, text) in scripts {
        let tmp = tempfile::Builder::new()
            .prefix("sftctl-test-only")
            .suffix(".sh")
            .tempfile()?;
        fs_err::write(tmp.path(), text)?;
        let dir = std::env::temp_dir();
        slurm
            .sbatch_test_only(&["--output=/dev/null".into()], tmp.path(), &dir)
            .map_err(|e| {
                if e.timed_out() {
                    anyhow::anyhow!("Slurm did not answer the check of {what}: {e}")
                } else {
                    UserError(format!("Slurm refuses {what}: {e}")).into()
                }
            })?;
    }
    Ok(())
}

/// The `#SBATCH` lines of a run's script, minus the ones a batch sets on the command line.
fn sbatch_lines(script: &str) -> String {
    script
        .lines()
        .filter(|l| {
            l.starts_with("#SBATCH") && !l.contains("--job-name") && !l.contains("--output")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A line of submit's output: job id, run id, run name, and the evaluation for an eval job.
pub type Line = (String, String, String, Option<String>);

/// An evaluation job to submit for a run whose training is not (re)submitted now.
#[derive(Debug, Clone)]
pub struct EvalTodo {
    /// Index into the plan's runs.
    pub run: usize,
    pub eval: String,
    /// The unfinished training job it waits for (`afterok`); `None` once training is done.
    pub after: Option<String>,
}

/// One `sbatch` call to make: the entries (index i = array task i), what it waits for, the
/// script's file name in each run directory and the stem of its log file.
struct BatchPlan {
    entries: Vec<BatchEntry>,
    /// `(job, array)`: `afterok:<job>`, or `aftercorr:<job>` when both are arrays.
    after: Option<(String, bool)>,
    script_name: String,
    log_stem: String,
}

fn planned<'a>(plan: &'a Plan, run_id: &str) -> &'a crate::plan::PlannedRun {
    plan.runs
        .iter()
        .find(|r| r.id == run_id)
        .expect("planned run")
}

/// Writes the intent, calls sbatch, records the outcome; returns `(job, array)`.
fn submit_batch(
    plan: &Plan,
    sweep: &SweepDir,
    slurm: &Slurm,
    bp: BatchPlan,
    lines: &mut Vec<Line>,
) -> anyhow::Result<(String, bool)> {
    let s = &plan.spec.slurm;
    let array = bp.entries.len() > 1;
    let token = new_token();
    let name = batch_job_name(sweep.name(), &token);
    let mut argv = vec![format!("--job-name={name}")];
    if let Some((j, arr)) = &bp.after {
        argv.push(format!(
            "--dependency={}:{j}",
            if *arr && array {
                "aftercorr"
            } else {
                "afterok"
            }
        ));
    }
    let mut b = Batch {
        format_version: sftctl_ledger::FORMAT_VERSION,
        token: token.clone(),
        executor: Executor::Slurm,
        created_at: Timestamp::now(),
        entries: bp.entries,
        state: BatchState::Intent,
        job_id: None,
        depends_on: bp.after.iter().map(|(j, _)| j.clone()).collect(),
        argv: Vec::new(),
    };
    let script = if array {
        let links = sweep.batch_links(&token);
        let throttle = if s.array_throttle > 0 {
            format!("%{}", s.array_throttle)
        } else {
            String::new()
        };
        argv.push(format!("--array=0-{}{throttle}", b.entries.len() - 1));
        argv.push(format!(
            "--output={}/%a/logs/{}-%A_%a.out",
            links.display(),
            bp.log_stem
        ));
        let first_run = planned(plan, &b.entries[0].run_id);
        let first = match &b.entries[0].eval {
            Some(e) => first_run.eval_scripts.iter().find(|(n, _)| n == e),
            None => None,
        }
        .map(|(_, t)| t)
        .or_else(|| {
            first_run
                .scripts
                .iter()
                .find(|(p, _)| *p == b.entries[0].phase)
                .map(|(_, t)| t)
        })
        .expect("the batch's script");
        let wrapper = format!(
            "#!/bin/bash\n# Array batch {token} of sweep {}: task i runs the script of run i.\n{}exec bash {}/\"$SLURM_ARRAY_TASK_ID\"/{}\n",
            sweep.name(),
            sbatch_lines(first),
            shell_quote(&links.to_string_lossy()),
            bp.script_name
        );
        let path = sweep.path().join("batches").join(format!("{token}.sh"));
        b.argv = argv.clone();
        sweep.write_batch(&b)?;
        sweep.link_batch(&b)?;
        sftctl_ledger::io::write_atomic(&path, wrapper.as_bytes())?;
        path
    } else {
        let run = sweep.run(&b.entries[0].run_id);
        argv.push(format!(
            "--output={}/logs/{}-%j.out",
            run.path().display(),
            bp.log_stem
        ));
        b.argv = argv.clone();
        sweep.write_batch(&b)?;
        run.path().join(&bp.script_name)
    };
    match slurm.sbatch(&argv, &script, sweep.path()) {
        Ok(job) => {
            record_submitted(sweep, &mut b, job.job, array)?;
            for (i, e) in b.entries.iter().enumerate() {
                let jid = if array {
                    format!("{}_{i}", job.job)
                } else {
                    job.job.to_string()
                };
                let r = planned(plan, &e.run_id);
                lines.push((jid, e.run_id.clone(), r.name.clone(), e.eval.clone()));
            }
            Ok((job.job.to_string(), array))
        }
        Err(e) if e.timed_out() => {
            // sbatch may have submitted the job before it was killed: the batch stays an
            // intent, which the next submit reconciles by job name (never twice).
            Err(anyhow::anyhow!(
                "{e}; batch {token} ({} run(s)) may or may not have been submitted: the next `sftctl submit` finds out from Slurm by job name; {} run(s) submitted before it are recorded",
                b.entries.len(),
                lines.len()
            ))
        }
        Err(e) => {
            b.state = BatchState::Void;
            sweep.write_batch(&b)?;
            Err(UserError(format!(
                "Slurm refused batch {token} ({} run(s)); {} run(s) submitted before it are recorded: {e}",
                b.entries.len(),
                lines.len()
            ))
            .into())
        }
    }
}

/// The evaluations that run as their own job.
fn eval_jobs(plan: &Plan) -> Vec<String> {
    plan.spec
        .evals
        .iter()
        .filter(|e| e.spec.placement == EvalPlacement::EvalJob)
        .map(|e| e.spec.name.clone())
        .collect()
}

fn submit_slurm(
    plan: &Plan,
    sweep: &SweepDir,
    slurm: &Slurm,
    todo: &[usize],
    evals: &[EvalTodo],
    lines: &mut Vec<Line>,
) -> anyhow::Result<()> {
    // Runs with the same phases (a grid may vary `strategy`) are batched together.
    let mut groups: std::collections::BTreeMap<Vec<u32>, Vec<usize>> = Default::default();
    for &i in todo {
        groups.entry(plan.runs[i].phases()).or_default().push(i);
    }
    for (phases, members) in &groups {
        submit_group(plan, sweep, slurm, phases, members, lines)?;
    }
    // Evaluation jobs of runs whose training was submitted before: those whose training is
    // done go together (an array per evaluation), those still waiting one by one (each after
    // its own training job).
    let mut ready: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for t in evals {
        match &t.after {
            None => ready.entry(t.eval.as_str()).or_default().push(t.run),
            Some(job) => {
                let r = &plan.runs[t.run];
                submit_batch(
                    plan,
                    sweep,
                    slurm,
                    BatchPlan {
                        entries: vec![eval_entry(r, &t.eval)],
                        after: Some((job.clone(), false)),
                        script_name: eval_script_name(&t.eval),
                        log_stem: format!("eval-{}", t.eval),
                    },
                    lines,
                )?;
            }
        }
    }
    let s = &plan.spec.slurm;
    for (eval, runs) in ready {
        for chunk in runs.chunks(if s.array { MAX_ARRAY } else { 1 }) {
            submit_batch(
                plan,
                sweep,
                slurm,
                BatchPlan {
                    entries: chunk
                        .iter()
                        .map(|&i| eval_entry(&plan.runs[i], eval))
                        .collect(),
                    after: None,
                    script_name: eval_script_name(eval),
                    log_stem: format!("eval-{eval}"),
                },
                lines,
            )?;
        }
    }
    Ok(())
}

/// The batch entry of evaluation `eval` of run `r` (after its last phase).
fn eval_entry(r: &crate::plan::PlannedRun, eval: &str) -> BatchEntry {
    BatchEntry {
        run_id: r.id.clone(),
        phase: r.phases().last().copied().unwrap_or(0),
        eval: Some(eval.to_owned()),
    }
}

fn submit_group(
    plan: &Plan,
    sweep: &SweepDir,
    slurm: &Slurm,
    phases: &[u32],
    todo: &[usize],
    lines: &mut Vec<Line>,
) -> anyhow::Result<()> {
    let s = &plan.spec.slurm;
    for chunk in todo.chunks(if s.array { MAX_ARRAY } else { 1 }) {
        // Phase k+1 of a chunk waits for phase k: `afterok` for a single job, `aftercorr`
        // (task i after task i) for an array. The evaluation jobs wait for the last phase the
        // same way.
        let mut prev: Option<(String, bool)> = None;
        for &phase in phases {
            let bp = BatchPlan {
                entries: chunk
                    .iter()
                    .map(|&i| BatchEntry {
                        run_id: plan.runs[i].id.clone(),
                        phase,
                        eval: None,
                    })
                    .collect(),
                after: prev.take(),
                script_name: script_name(phase),
                log_stem: "slurm".into(),
            };
            prev = Some(submit_batch(plan, sweep, slurm, bp, lines)?);
        }
        for eval in eval_jobs(plan) {
            let bp = BatchPlan {
                entries: chunk
                    .iter()
                    .map(|&i| eval_entry(&plan.runs[i], &eval))
                    .collect(),
                after: prev.clone(),
                script_name: eval_script_name(&eval),
                log_stem: format!("eval-{eval}"),
            };
            submit_batch(plan, sweep, slurm, bp, lines)?;
        }
    }
    Ok(())
}

fn submit_local(
    plan: &Plan,
    sweep: &SweepDir,
    todo: &[usize],
    evals: &[EvalTodo],
    wait: bool,
    lines: &mut Vec<Line>,
) -> anyhow::Result<()> {
    let token = new_token();
    let names = eval_jobs(plan);
    // A run's evaluations follow its phases: the worker runs one run's entries in order and
    // skips the rest after a failed phase (as `afterok` does).
    let mut entries: Vec<BatchEntry> = Vec::new();
    for &i in todo {
        let r = &plan.runs[i];
        entries.extend(r.phases().into_iter().map(|p| BatchEntry {
            run_id: r.id.clone(),
            phase: p,
            eval: None,
        }));
        entries.extend(names.iter().map(|e| eval_entry(r, e)));
    }
    let mut by_run: Vec<&EvalTodo> = evals.iter().filter(|t| t.after.is_none()).collect();
    by_run.sort_by_key(|t| t.run);
    entries.extend(
        by_run
            .iter()
            .map(|t| eval_entry(&plan.runs[t.run], &t.eval)),
    );
    let mut b = Batch {
        format_version: sftctl_ledger::FORMAT_VERSION,
        token: token.clone(),
        executor: Executor::Local,
        created_at: Timestamp::now(),
        entries,
        state: BatchState::Submitted,
        job_id: Some(format!("local-{token}")),
        depends_on: Vec::new(),
        argv: Vec::new(),
    };
    for (i, e) in b.entries.iter().enumerate() {
        let run = sweep.run(&e.run_id);
        let job_id = format!("local-{token}-{i}");
        run.write_local_job(&LocalJob {
            job_id: job_id.clone(),
            state: LocalState::Pending,
            worker_pid: std::process::id(),
            host: hostname(),
            pid: None,
            exit_code: None,
            signal: None,
            requeues: 0,
            updated_at: Timestamp::now(),
        })?;
        match &e.eval {
            Some(eval) => {
                let attempt = run
                    .read_eval_submissions()?
                    .iter()
                    .filter(|s| s.eval == *eval)
                    .count() as u32
                    + 1;
                run.append_eval_submission(&EvalSubmission {
                    eval: eval.clone(),
                    job_id: job_id.clone(),
                    batch: token.clone(),
                    attempt,
                    executor: Executor::Local,
                    submitted_at: Timestamp::now(),
                    depends_on: None,
                })?;
            }
            None => {
                let attempt = run
                    .read_submissions()?
                    .iter()
                    .filter(|s| s.phase == e.phase)
                    .count() as u32
                    + 1;
                run.append_submission(&Submission {
                    job_id: job_id.clone(),
                    batch: token.clone(),
                    phase: e.phase,
                    attempt,
                    executor: Executor::Local,
                    submitted_at: Timestamp::now(),
                    depends_on: None,
                })?;
            }
        }
        let name = plan
            .runs
            .iter()
            .find(|r| r.id == e.run_id)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        lines.push((job_id, e.run_id.clone(), name, e.eval.clone()));
    }
    if b.entries.is_empty() {
        return Ok(());
    }
    sweep.write_batch(&b)?;
    b.state = BatchState::Submitted;
    let parallel = plan.spec.max_parallel;
    if wait {
        return crate::cmd::local::run_batch(sweep, &token, parallel);
    }
    let log = sweep
        .path()
        .join("batches")
        .join(format!("{token}.worker.log"));
    crate::cmd::local::spawn_worker(sweep, &token, parallel, &log)
        .with_context(|| format!("starting the local worker (log `{}`)", log.display()))
}
