//! Job faults with the real trainer on the real Slurm cluster (issue 8, item 2): a node taken
//! down under a running job, a job reaching its time limit with `--signal`, `scancel` landing
//! inside a checkpoint write, and the disk filling up during a checkpoint. Each fault ends with
//! the last complete checkpoint intact (its `COMPLETE` marker, every file at its recorded size,
//! weights, optimizer state and trainer state readable) and a retry (Slurm's requeue, or
//! `sftctl submit --retry-failed`) resuming from it and finishing the run. The model and data
//! are the quickstart's (`examples/`), the runtime is the built `sftctl-train`. Reproduce with
//! `SFTCTL_REQUIRE_SLURM=1 cargo test -p sftctl-tests --test reliability_jobs -- --nocapture`
//! (as root; each test takes the cluster lock).

use sftctl_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: CI has two cores shared with other tests.
const T: Duration = Duration::from_secs(300);

/// The quickstart shrunk to one grid point of `steps` optimizer steps named `name`,
/// checkpointing every `checkpoint_every` steps, submitted to Slurm with time limit `time` and
/// `slurm` added to its `[slurm]` table.
fn quickstart(
    name: &str,
    steps: u32,
    checkpoint_every: u32,
    time: &str,
    slurm: &str,
) -> (Sandbox, String) {
    let edits = [
        ("executor = \"local\"", "executor = \"slurm\"".to_owned()),
        // Enough epochs of the 400-sample data set that `max_steps` decides the length.
        ("epochs = 2", "epochs = 100".to_owned()),
        (
            "max_steps = 0",
            format!("max_steps = {steps}\ncheckpoint_every = {checkpoint_every}"),
        ),
        ("time = \"00:10:00\"", format!("time = \"{time}\"")),
        ("cpus_per_task = 1", format!("cpus_per_task = 1\n{slurm}")),
    ];
    quickstart_sweep(name, true, &edits, "")
}

fn attempts(run: &Path) -> Vec<serde_json::Value> {
    jsonl(&run.join("attempts.jsonl"))
}

fn events(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    jsonl(&run.join("events/rank-0.jsonl"))
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// Polls `f` until it returns `Some`, failing with `what` and the run's logs after [`T`].
fn wait<R>(run: &Path, what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let start = Instant::now();
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(
            start.elapsed() < T,
            "timed out waiting for {what}:\n{}",
            job_logs(run)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first word `sftctl submit` printed: the job id.
fn submitted(out: &str) -> String {
    out.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("submit printed no job id: `{out}`"))
        .to_owned()
}

/// What Slurm says of job `job` (an id as squeue prints it, `123` or `123_0`): state and node.
fn squeue_job(job: &str) -> Option<(String, String)> {
    let base = job.split('_').next().unwrap();
    let out = Command::new("squeue")
        .args(["-h", "-r", "-j", base, "-o", "%i|%T|%N"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f.len() == 3 && f[0] == job).then(|| (f[1].to_owned(), f[2].to_owned()))
    })
}

fn scontrol(args: &[&str]) {
    let o = Command::new("scontrol").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "scontrol {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Checks every checkpoint directory of a run: a checkpoint with a `COMPLETE` marker must be
/// whole (each listed file at its recorded size, the weights a readable safetensors file,
/// the optimizer state a readable burnpack file, the trainer state of the same step); a
/// directory without one never counts. Returns the steps of the complete checkpoints, sorted.
fn valid_checkpoints(run: &Path) -> Vec<u64> {
    let root = run.join("checkpoints");
    let mut steps = Vec::new();
    let Ok(rd) = fs_err::read_dir(&root) else {
        return steps;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(bytes) = fs_err::read(dir.join("COMPLETE")) else {
            continue;
        };
        let marker: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("`{}/COMPLETE`: {e}", dir.display()));
        assert_eq!(marker["step"], step, "{marker}");
        let files = marker["files"].as_array().expect("marker lists files");
        let sizes = marker["bytes"].as_array().expect("marker lists sizes");
        assert_eq!(files.len(), sizes.len(), "{marker}");
        for (f, n) in files.iter().zip(sizes) {
            let p = dir.join(f.as_str().unwrap());
            let len = fs_err::metadata(&p)
                .unwrap_or_else(|e| panic!("a complete checkpoint lost a file: {e}"))
                .len();
            assert_eq!(Some(len), n.as_u64(), "torn file `{}`", p.display());
        }
        let weights = fs_err::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&weights)
            .unwrap_or_else(|e| panic!("`{}/model.safetensors`: {e}", dir.display()));
        assert!(!st.is_empty(), "no tensors in `{}`", dir.display());
        let state: serde_json::Value =
            serde_json::from_slice(&fs_err::read(dir.join("trainer_state.json")).unwrap()).unwrap();
        assert_eq!(state["step"], step);
        let opt = fs_err::read(dir.join("optimizer.bpk")).unwrap();
        let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(opt))
            .unwrap_or_else(|e| panic!("`{}/optimizer.bpk`: {e}", dir.display()));
        assert!(
            !reader.tensor_names().is_empty(),
            "no Adam moments in `{}`",
            dir.display()
        );
        steps.push(step);
    }
    steps.sort();
    steps
}

/// Waits until the run's state is final and checks it completed all `steps` steps: result,
/// one metrics record for every step (a redone step may appear twice; the last one counts), a
/// final checkpoint, no temporary or incomplete checkpoint directory left, and a resubmit
/// that submits nothing.
fn check_completed(sb: &Sandbox, spec: &str, run: &Path, steps: u64) {
    let s = sb
        .wait_for(spec, T, |s| {
            s["runs"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|r| r["state"] == "completed" || r["state"] == "failed")
            })
        })
        .unwrap();
    assert_eq!(
        s["runs"][0]["state"],
        "completed",
        "{s:#}\n{}",
        job_logs(run)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&fs_err::read(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["final_step"], steps);
    let metrics = jsonl(&run.join("metrics.jsonl"));
    for step in 1..=steps {
        let m = metrics
            .iter()
            .rev()
            .find(|m| m["step"] == step)
            .unwrap_or_else(|| panic!("no metrics for step {step}"));
        assert!(m["loss"].as_f64().is_some_and(f64::is_finite), "{m}");
    }
    let complete = valid_checkpoints(run);
    assert_eq!(complete.last(), Some(&steps), "final checkpoint");
    for e in fs_err::read_dir(run.join("checkpoints")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            name.strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| complete.contains(&s)),
            "left behind: checkpoints/{name}"
        );
    }
    assert_eq!(sb.ok(&["submit", spec]), "", "resubmitted a completed run");
}

/// Takes a node down (`scontrol update nodename=… state=down`, what Slurm does to a node that
/// stops answering) and brings it back on drop, however the test ends. This cluster has
/// `ReturnToService=2`, which puts a downed node back into service as soon as its slurmd
/// answers (within a second here); the node is also drained so that it stays out of
/// scheduling the way a failed node would.
struct NodeDown(String);

impl NodeDown {
    fn new(node: &str) -> Self {
        let n = format!("nodename={node}");
        let reason = "reason=sftctl-reliability-test";
        scontrol(&["update", &n, "state=down", reason]);
        let guard = Self(node.to_owned());
        scontrol(&["update", &n, "state=drain", reason]);
        guard
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        let _ = Command::new("scontrol")
            .args(["update", &format!("nodename={}", self.0), "state=resume"])
            .output();
    }
}

/// Waits until the killed or requeued instance of `job` is gone ([`old_instance_gone`]), then
/// one more second for the slurmd's own cleanup.
fn wait_old_instance_gone(run: &Path, job: &str) {
    wait(run, "the old instance to end", || {
        old_instance_gone(run, job).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
}

#[test]
fn node_down_mid_job_the_job_resumes_on_the_other_node() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = Instant::now();
    const STEPS: u64 = 400;
    let (sb, spec) = quickstart("fault-node", STEPS as u32, 10, "00:10:00", "");
    let job = submitted(&sb.ok(&["submit", &spec]));
    let run = only_run_dir(&sb, "fault-node");
    // Running, past its first checkpoint, and not near the end.
    let node = wait(&run, "the job running", || {
        squeue_job(&job).and_then(|(st, n)| (st == "RUNNING" && !n.is_empty()).then_some(n))
    });
    wait(&run, "a first checkpoint", || {
        (!valid_checkpoints(&run).is_empty()).then_some(())
    });
    let done = jsonl(&run.join("metrics.jsonl")).len() as u64;
    assert!(done < STEPS / 2, "the run is too short for this machine");
    let down = NodeDown::new(&node);
    let before = valid_checkpoints(&run);
    eprintln!("node {node} down at step {done}; complete checkpoints {before:?}");

    // Slurm requeues the job (the script carries `--requeue`) and kills it on the node: the
    // trainer gets SIGTERM, then SIGKILL after KillWait.
    let mut seen: Vec<String> = squeue_job(&job).into_iter().map(|(st, _)| st).collect();
    wait_old_instance_gone(&run, &job);
    let after = valid_checkpoints(&run);
    let other = wait(&run, "the job running on another node", || {
        let (st, n) = squeue_job(&job)?;
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if st == "PENDING" {
            let _ = Command::new("scontrol")
                .args(["update", &format!("jobid={job}"), "StartTime=now"])
                .output();
        }
        (st == "RUNNING").then_some(n)
    });
    assert_ne!(other, node, "started on the drained node");
    drop(down);
    eprintln!(
        "Slurm states after the node went down: {seen:?}; complete checkpoints when the old \
         instance ended: {after:?}; now on {other}"
    );
    check_completed(&sb, &spec, &run, STEPS);

    let a = attempts(&run);
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0]["nodes"], serde_json::json!([node]), "{a:#?}");
    assert_eq!(a[1]["nodes"], serde_json::json!([other]), "{a:#?}");
    assert_eq!(
        a[1]["job_id"],
        job.as_str(),
        "Slurm requeued it, not sftctl"
    );
    let from = a[1]["resumed_from_step"].as_u64().unwrap();
    assert_eq!(
        Some(&from),
        after.last(),
        "resumed from step {from}; complete checkpoints {after:?}"
    );
    assert!(from >= *before.last().unwrap());
    // Accounting keeps the attempt on the downed node.
    let base = job.split('_').next().unwrap();
    let o = Command::new("sacct")
        .args(["-j", base, "--duplicates", "-X", "-P", "-n"])
        .args(["--format=JobID,State,NodeList"])
        .output()
        .unwrap();
    let acct = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        acct.lines()
            .any(|l| l.ends_with(&format!("|NODE_FAIL|{node}"))),
        "sacct has no failed attempt on {node}:\n{acct}"
    );
    assert!(
        acct.lines()
            .any(|l| l.ends_with(&format!("|COMPLETED|{other}"))),
        "sacct has no completed attempt on {other}:\n{acct}"
    );
    eprintln!(
        "node-down test: resumed from step {from} on {other}, {:.1?}\nsacct:\n{acct}",
        t0.elapsed()
    );
}

#[test]
fn time_limit_with_signal_checkpoints_before_the_kill_and_resumes() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = Instant::now();
    // A one-minute limit with the warning 55 s before it: Slurm checks limits about every
    // 30 s, so USR1 arrives 5-35 s after the start. The run must outlast that.
    const STEPS: u64 = 1500;
    let (sb, spec) = quickstart("fault-time", STEPS as u32, 100, "1", "signal_seconds = 55");
    let job = submitted(&sb.ok(&["submit", &spec]));
    let run = only_run_dir(&sb, "fault-time");
    let started = wait(&run, "attempt 1", || {
        (!attempts(&run).is_empty()).then(Instant::now)
    });
    let pre = wait(&run, "the time-limit warning", || {
        assert!(
            !run.join("result.json").exists(),
            "the run finished before Slurm's warning: make it longer"
        );
        events(&run, "preempted").first().cloned()
    });
    let warned_after = started.elapsed();
    // Slurm's USR1 normally comes first; on a slow check the trainer's own deadline stop (about
    // 40 s into a one-minute job, issue 5) may beat it: either way a checkpoint before the kill.
    assert!(
        pre["signal"] == "USR1" || pre["signal"] == "deadline",
        "{pre}"
    );
    let stop = pre["step"].as_u64().unwrap();
    assert!(stop > 0 && stop < STEPS, "{pre}");
    let complete = valid_checkpoints(&run);
    assert_eq!(
        complete.last(),
        Some(&stop),
        "the checkpoint of the stop step is complete"
    );
    // The job requeued itself; give the next attempt room to finish (and start it now).
    wait(&run, "the requeued job pending", || {
        squeue_job(&job).filter(|(st, _)| st == "PENDING")
    });
    wait_old_instance_gone(&run, &job);
    scontrol(&[
        "update",
        &format!("jobid={job}"),
        "TimeLimit=10",
        "StartTime=now",
    ]);
    check_completed(&sb, &spec, &run, STEPS);
    let a = attempts(&run);
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[1]["resumed_from_step"], stop, "{a:#?}");
    // Slurm's own end for attempt 1 was the requeue, not the time limit.
    assert!(
        !job_logs(&run).contains("DUE TO TIME LIMIT"),
        "killed by the time limit:\n{}",
        job_logs(&run)
    );
    eprintln!(
        "time-limit test: {} {warned_after:.1?} after attempt 1 started, stopped at step \
         {stop} with a complete checkpoint; attempt 2 resumed and finished; {:.1?}",
        pre["signal"],
        t0.elapsed()
    );
}

/// Counts `paused in checkpoint at <stage>` lines in the run's job logs.
fn pauses(run: &Path, stage: &str) -> usize {
    job_logs(run)
        .matches(&format!("paused in checkpoint at {stage}"))
        .count()
}

/// Submits (or retries) with the trainer pausing inside the checkpoint write of `step` at
/// `stage` (`SFTCTL_TEST_PAUSE_CHECKPOINT`, passed to the job through sbatch's environment),
/// cancels the job there, and checks the cancelled run: the paused checkpoint does not count,
/// the earlier complete ones are intact. Returns the newest complete checkpoint.
fn cancel_inside_checkpoint(
    sb: &mut Sandbox,
    spec: &str,
    run_of: impl Fn(&Sandbox) -> PathBuf,
    args: &[&str],
    stage: &str,
    step: u64,
) -> u64 {
    sb.env = vec![(
        "SFTCTL_TEST_PAUSE_CHECKPOINT".into(),
        format!("{stage}@{step}"),
    )];
    let job = submitted(&sb.ok(args));
    sb.env.clear();
    let run = run_of(sb);
    // Each stage is paused at once in the test: its first line is this one.
    wait(&run, "the pause inside the checkpoint write", || {
        (pauses(&run, stage) == 1).then_some(())
    });
    let partial = match stage {
        "weights" => run.join(format!("checkpoints/.tmp-step-{step}")),
        _ => run.join(format!("checkpoints/step-{step}")),
    };
    assert!(
        partial.join("model.safetensors").is_file(),
        "{}",
        partial.display()
    );
    let o = Command::new("scancel").arg(&job).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
    let complete = valid_checkpoints(&run);
    assert!(
        !complete.contains(&step),
        "the interrupted checkpoint counts"
    );
    assert!(!partial.join("COMPLETE").exists());
    let last = *complete
        .last()
        .unwrap_or_else(|| panic!("no complete checkpoint left:\n{}", job_logs(&run)));
    assert!(last < step);
    eprintln!("cancelled inside checkpoint {step} at `{stage}`; complete: {complete:?}");
    last
}

#[test]
fn cancel_while_writing_a_checkpoint_keeps_the_last_complete_one() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = Instant::now();
    const STEPS: u64 = 30;
    let (mut sb, spec) = quickstart("fault-cancel", STEPS as u32, 5, "00:10:00", "");
    let run_of = |sb: &Sandbox| only_run_dir(sb, "fault-cancel");
    // 1: killed with the weights of step 10 written and the rest not (a `.tmp-` directory).
    let last1 = cancel_inside_checkpoint(&mut sb, &spec, run_of, &["submit", &spec], "weights", 10);
    assert_eq!(last1, 5);
    // 2: the retry resumes from step 5 and is killed with checkpoint 20 renamed into place but
    // not sealed (a `step-20` without its marker).
    let last2 = cancel_inside_checkpoint(
        &mut sb,
        &spec,
        run_of,
        &["submit", &spec, "--retry-failed"],
        "renamed",
        20,
    );
    assert_eq!(last2, 15);
    // 3: the next retry resumes from step 15 and finishes.
    sb.ok(&["submit", &spec, "--retry-failed"]);
    let run = run_of(&sb);
    check_completed(&sb, &spec, &run, STEPS);
    let a = attempts(&run);
    let from: Vec<u64> = a
        .iter()
        .map(|a| a["resumed_from_step"].as_u64().unwrap())
        .collect();
    assert_eq!(from, [0, 5, 15], "{a:#?}");
    eprintln!("cancel test: {:.1?}", t0.elapsed());
}

/// A small tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Self {
        let uid = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!(
                "size={bytes},mode=0755,uid={},gid={}",
                uid.uid, uid.gid
            ))
            .arg("sftctl-test-full")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on `{}`", dir.display());
        Self(dir.to_owned())
    }

    fn resize(&self, bytes: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount `{}`", self.0.display());
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        (s.blocks() - s.blocks_free()) as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes a directory tree takes on a page-granular file system.
fn pages(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs_err::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += 4096 + pages(&p);
        } else {
            n += fs_err::metadata(&p).unwrap().len().div_ceil(4096) * 4096;
        }
    }
    n
}

#[test]
fn disk_full_while_writing_a_checkpoint_keeps_the_last_complete_one() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = Instant::now();
    const STEPS: u64 = 200;
    // Held at submit, so the small file system is in place before the job starts.
    let (sb, spec) = quickstart(
        "fault-full",
        STEPS as u32,
        20,
        "00:10:00",
        "extra = [\"--hold\"]",
    );
    let job = submitted(&sb.ok(&["submit", &spec]));
    let run = only_run_dir(&sb, "fault-full");
    let ckpts = run.join("checkpoints");
    fs_err::create_dir_all(&ckpts).unwrap();
    let fs = Tmpfs::mount(&ckpts, 256 << 20);
    scontrol(&["release", job.split('_').next().unwrap()]);

    // Stop the job (SIGSTOP) right after a checkpoint is sealed and before the next begins,
    // then shrink the file system to half a checkpoint of free space.
    let (last, size) = wait(&run, "a job stopped between two checkpoints", || {
        let complete = valid_checkpoints(&run);
        let last = *complete.last()?;
        scontrol(&["suspend", &job]);
        let between = fs_err::read_dir(&ckpts).unwrap().flatten().all(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| complete.contains(&s))
        });
        if !between || jsonl(&run.join("metrics.jsonl")).len() as u64 >= STEPS - 20 {
            scontrol(&["resume", &job]);
            assert!(
                !run.join("result.json").exists(),
                "the run finished first: make it longer"
            );
            return None;
        }
        Some((last, pages(&ckpts.join(format!("step-{last}")))))
    });
    let used = fs.used();
    fs.resize((used + size / 2).div_ceil(4096) * 4096);
    eprintln!(
        "suspended after checkpoint {last} ({size} bytes); {used} bytes in use; \
         file system resized to {} free",
        size / 2
    );
    scontrol(&["resume", &job]);
    let needle = run.to_string_lossy().into_owned();
    let s = sb
        .wait_for(&spec, T, |s| {
            // Slurm suspends and resumes asynchronously (SIGSTOP, SIGCONT from slurmd): under
            // load a resume can overtake the suspend and leave the trainer stopped. Continuing
            // a process that runs is harmless.
            for pid in processes_with(&needle) {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
            s["runs"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|r| r["state"] == "completed" || r["state"] == "failed")
            })
        })
        .unwrap();
    assert_eq!(s["runs"][0]["state"], "failed", "{s:#}\n{}", job_logs(&run));
    let logs = job_logs(&run);
    assert!(logs.contains("No space left on device"), "{logs}");
    let complete = valid_checkpoints(&run);
    assert_eq!(complete.last(), Some(&last), "{complete:?}\n{logs}");
    let errors = events(&run, "error");
    eprintln!(
        "the job failed: {}",
        errors
            .last()
            .map_or(String::new(), |e| e["message"].to_string())
    );

    // Space again; the retry (held as well) resumes from the last complete checkpoint.
    fs.resize(256 << 20);
    let retry = submitted(&sb.ok(&["submit", &spec, "--retry-failed"]));
    scontrol(&["release", retry.split('_').next().unwrap()]);
    check_completed(&sb, &spec, &run, STEPS);
    let a = attempts(&run);
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[1]["resumed_from_step"], last, "{a:#?}");
    drop(fs);
    eprintln!("disk-full test: {:.1?}", t0.elapsed());
}
