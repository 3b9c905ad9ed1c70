//! `sftctl submit`: plan, check with `sbatch --test-only`, then under the sweep's claim reconcile,
//! write the ledger and submit what is new (or failed, with `--retry-failed`). Submit-and-exit.
//!
//! Crash safety: a batch is written as an intent before `sbatch` and completed after; the job
//! name carries the batch token, so a submit killed in between is reconciled by the next one.

use crate::args::{ExecutorArg, SubmitArgs};
use crate::plan::{Plan, VERSION, build};
use crate::quote::shell_quote;
use crate::spec::Spec;
use crate::status::{batch_job_name, collect, reconcile, record_submitted};
use crate::{UserError, user_err};
use anyhow::Context;
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
        && !todo.is_empty()
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
    }

    let mut lines = Vec::new();
    // Jobs submitted before a refusal are printed too, then the refusal is reported.
    let outcome = match (todo.is_empty(), executor) {
        (true, _) => Ok(()),
        (false, Executor::Slurm) => submit_slurm(&plan, &sweep, &slurm, &todo, &mut lines),
        (false, Executor::Local) => submit_local(&plan, &sweep, &todo, a.wait, &mut lines),
    };
    drop(_claim);
    let mut out = std::io::stdout().lock();
    if a.json {
        let runs: Vec<_> = lines
            .iter()
            .map(|(job, id, name)| serde_json::json!({"job_id": job, "run_id": id, "name": name}))
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"sweep": plan.spec.name, "submitted": runs, "skipped": skipped}),
        )?;
        writeln!(out)?;
    } else {
        for (job, id, name) in &lines {
            writeln!(out, "{job}\t{id}\t{name}")?;
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
    }
    Ok(())
}

/// `sbatch --test-only` of the first script, before the ledger is touched, so that a refusal
/// (unknown partition, QOS, time limit) leaves the ledger as it was.
fn test_only(plan: &Plan, slurm: &Slurm) -> anyhow::Result<()> {
    let Some(r) = plan.runs.first() else {
        return Ok(());
    };
    let (_, text) = &r.scripts[0];
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
                anyhow::anyhow!("Slurm did not answer the check of the sweep's jobs: {e}")
            } else {
                UserError(format!("Slurm refuses the sweep's jobs: {e}")).into()
            }
        })?;
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

fn submit_slurm(
    plan: &Plan,
    sweep: &SweepDir,
    slurm: &Slurm,
    todo: &[usize],
    lines: &mut Vec<(String, String, String)>,
) -> anyhow::Result<()> {
    // Runs with the same phases (a grid may vary `strategy`) are batched together.
    let mut groups: std::collections::BTreeMap<Vec<u32>, Vec<usize>> = Default::default();
    for &i in todo {
        groups.entry(plan.runs[i].phases()).or_default().push(i);
    }
    for (phases, members) in &groups {
        submit_group(plan, sweep, slurm, phases, members, lines)?;
    }
    Ok(())
}

fn submit_group(
    plan: &Plan,
    sweep: &SweepDir,
    slurm: &Slurm,
    phases: &[u32],
    todo: &[usize],
    lines: &mut Vec<(String, String, String)>,
) -> anyhow::Result<()> {
    let s = &plan.spec.slurm;
    for chunk in todo.chunks(if s.array { MAX_ARRAY } else { 1 }) {
        // Phase k+1 of a chunk waits for phase k: `afterok` for a single job, `aftercorr`
        // (task i after task i) for an array.
        let mut prev: Option<(String, bool)> = None;
        for &phase in phases {
            let array = chunk.len() > 1;
            let token = crate::cmd::submit::new_token();
            let name = batch_job_name(sweep.name(), &token);
            let depends_on: Vec<String> = prev.iter().map(|(j, _)| j.clone()).collect();
            let mut argv = vec![format!("--job-name={name}")];
            if let Some((j, arr)) = &prev {
                argv.push(format!(
                    "--dependency={}:{j}",
                    if *arr { "aftercorr" } else { "afterok" }
                ));
            }
            let mut b = Batch {
                format_version: sftctl_ledger::FORMAT_VERSION,
                token: token.clone(),
                executor: Executor::Slurm,
                created_at: Timestamp::now(),
                entries: chunk
                    .iter()
                    .map(|&i| BatchEntry {
                        run_id: plan.runs[i].id.clone(),
                        phase,
                    })
                    .collect(),
                state: BatchState::Intent,
                job_id: None,
                depends_on,
                argv: Vec::new(),
            };
            let script = if array {
                let links = sweep.batch_links(&token);
                let throttle = if s.array_throttle > 0 {
                    format!("%{}", s.array_throttle)
                } else {
                    String::new()
                };
                argv.push(format!("--array=0-{}{throttle}", chunk.len() - 1));
                argv.push(format!(
                    "--output={}/%a/logs/slurm-%A_%a.out",
                    links.display()
                ));
                let first = &plan.runs[chunk[0]]
                    .scripts
                    .iter()
                    .find(|(p, _)| *p == phase)
                    .expect("phase script")
                    .1;
                let wrapper = format!(
                    "#!/bin/bash\n# Array batch {token} of sweep {}: task i runs the script of run i.\n{}exec bash {}/\"$SLURM_ARRAY_TASK_ID\"/{}\n",
                    sweep.name(),
                    sbatch_lines(first),
                    shell_quote(&links.to_string_lossy()),
                    script_name(phase)
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
                    "--output={}/logs/slurm-%j.out",
                    run.path().display()
                ));
                b.argv = argv.clone();
                sweep.write_batch(&b)?;
                run.script(phase)
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
                        let r = plan
                            .runs
                            .iter()
                            .find(|r| r.id == e.run_id)
                            .expect("planned run");
                        lines.push((jid, e.run_id.clone(), r.name.clone()));
                    }
                    prev = Some((job.job.to_string(), array));
                }
                Err(e) if e.timed_out() => {
                    // sbatch may have submitted the job before it was killed: the batch stays an
                    // intent, which the next submit reconciles by job name (never twice).
                    return Err(anyhow::anyhow!(
                        "{e}; batch {token} ({} run(s)) may or may not have been submitted: the next `sftctl submit` finds out from Slurm by job name; {} run(s) submitted before it are recorded",
                        b.entries.len(),
                        lines.len()
                    ));
                }
                Err(e) => {
                    b.state = BatchState::Void;
                    sweep.write_batch(&b)?;
                    return Err(UserError(format!(
                        "Slurm refused batch {token} ({} run(s)); {} run(s) submitted before it are recorded: {e}",
                        b.entries.len(),
                        lines.len()
                    ))
                    .into());
                }
            }
        }
    }
    Ok(())
}

fn submit_local(
    plan: &Plan,
    sweep: &SweepDir,
    todo: &[usize],
    wait: bool,
    lines: &mut Vec<(String, String, String)>,
) -> anyhow::Result<()> {
    let token = new_token();
    let entries: Vec<BatchEntry> = todo
        .iter()
        .flat_map(|&i| {
            plan.runs[i].phases().into_iter().map(move |p| BatchEntry {
                run_id: plan.runs[i].id.clone(),
                phase: p,
            })
        })
        .collect();
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
        let attempt = run
            .read_submissions()?
            .iter()
            .filter(|s| s.phase == e.phase)
            .count() as u32
            + 1;
        run.write_local_job(&LocalJob {
            job_id: job_id.clone(),
            state: LocalState::Pending,
            worker_pid: std::process::id(),
            host: hostname(),
            pid: None,
            exit_code: None,
            signal: None,
            updated_at: Timestamp::now(),
        })?;
        run.append_submission(&Submission {
            job_id: job_id.clone(),
            batch: token.clone(),
            phase: e.phase,
            attempt,
            executor: Executor::Local,
            submitted_at: Timestamp::now(),
            depends_on: None,
        })?;
        let name = plan
            .runs
            .iter()
            .find(|r| r.id == e.run_id)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        lines.push((job_id, e.run_id.clone(), name));
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
