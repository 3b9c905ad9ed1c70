//! End-to-end tests of the real runtime `sftctl-train` (not the stand-in payload) driven by
//! `sftctl` against the test cluster: the README's quickstart (shrunk) trains on Slurm and
//! through the local executor, and a Slurm job preempted with USR1 checkpoints, requeues itself,
//! resumes, and ends bit-identical to an uninterrupted run.

use sftctl_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Generous: a debug-build step of the tiny model takes well under a second, but CI has two
/// cores shared with other tests.
const T: Duration = Duration::from_secs(600);

/// A sandbox holding a copy of `examples/` with the quickstart shrunk to one grid point of
/// `steps` optimizer steps, named `name`, with `warmup` warmup steps, checkpointing every
/// `checkpoint_every` steps, submitted to Slurm by default; with `no_grace` the trainer runs
/// with `--stop-grace-s 0`. The model and data are the bundled ones. Returns the sandbox and the
/// spec's path relative to it.
fn quickstart(
    name: &str,
    steps: u32,
    checkpoint_every: u32,
    warmup: u32,
    no_grace: bool,
) -> (Sandbox, String) {
    let mut edits = vec![
        ("executor = \"local\"", "executor = \"slurm\"".to_owned()),
        ("warmup_steps = 2", format!("warmup_steps = {warmup}")),
        (
            "max_steps = 0",
            format!("max_steps = {steps}\ncheckpoint_every = {checkpoint_every}"),
        ),
    ];
    if no_grace {
        edits.push((
            "[run]\n",
            "[run]\ncommand = [\"{binary}\", \"run\", \"{run_dir}\", \"--stop-grace-s\", \"0\"]\n"
                .to_owned(),
        ));
    }
    quickstart_sweep(name, true, &edits, "")
}

/// The run of a status document that has exactly one.
fn only_run(status: &serde_json::Value) -> &serde_json::Value {
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{status:#}");
    &runs[0]
}

/// Checks a completed run of `steps` steps of batch 8: status, result, metrics, checkpoint.
fn check_completed(
    sb: &Sandbox,
    spec: &str,
    name: &str,
    steps: u64,
) -> (PathBuf, serde_json::Value) {
    let s = sb
        .wait_for(spec, T, |s| {
            s["runs"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|r| r["state"] == "completed" || r["state"] == "failed")
            })
        })
        .unwrap();
    let run = only_run(&s);
    let dir = only_run_dir(sb, name);
    assert_eq!(run["state"], "completed", "{s:#}\n{}", job_logs(&dir));
    assert_eq!(run["samples_seen"], 8 * steps, "{s:#}");
    assert_eq!(run["total_samples"], 8 * steps, "{s:#}");
    let result: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["final_step"], steps);
    assert_eq!(result["samples_seen"], 8 * steps);
    let loss = result["final_loss"].as_f64().expect("a final loss");
    assert!(loss.is_finite() && loss > 0.0, "final loss {loss}");
    let metrics = jsonl(&dir.join("metrics.jsonl"));
    assert_eq!(
        metrics.len() as u64,
        steps,
        "one metrics line per optimizer step"
    );
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1, "{m}");
        assert!(m["loss"].as_f64().is_some_and(f64::is_finite), "{m}");
        assert!(
            m["grad_norm"]
                .as_f64()
                .is_some_and(|g| g.is_finite() && g > 0.0),
            "{m}"
        );
    }
    assert_eq!(metrics.last().unwrap()["loss"].as_f64(), Some(loss));
    // Resubmitting a completed sweep submits nothing.
    assert_eq!(sb.ok(&["submit", spec]), "");
    (dir, s)
}

/// The final checkpoint's weights, optimizer state (Adam moments) and sampler state.
#[derive(PartialEq, Debug)]
struct FinalState {
    weights: Vec<u8>,
    /// Adam moments by tensor name (the file's metadata is not compared).
    optimizer: Vec<(String, Vec<u8>)>,
    sampler: serde_json::Value,
    rng: serde_json::Value,
}

impl FinalState {
    /// Fails naming each part that differs from `other`.
    fn assert_same(&self, other: &Self, what: &str) {
        let mut differ = Vec::new();
        if self.weights != other.weights {
            differ.push("weights (model.safetensors)");
        }
        if self.optimizer != other.optimizer {
            differ.push("Adam moments (optimizer.bpk)");
        }
        if self.sampler != other.sampler {
            differ.push("sampler state");
        }
        if self.rng != other.rng {
            differ.push("random-generator state");
        }
        assert!(differ.is_empty(), "differs from {what}: {differ:?}");
    }
}

/// The tensors of a burnpack file by name, as raw bytes.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs_err::read(path).unwrap();
    let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(bytes))
        .unwrap_or_else(|e| panic!("`{}`: {e}", path.display()));
    let mut out: Vec<(String, Vec<u8>)> = reader
        .tensor_names()
        .into_iter()
        .map(|n| (n.to_string(), reader.tensor_data(n).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "`{}` holds no tensors", path.display());
    out
}

fn final_state(run: &Path, step: u64) -> FinalState {
    let dir = run.join(format!("checkpoints/step-{step}"));
    assert!(
        dir.join("COMPLETE").is_file(),
        "no final checkpoint {}",
        dir.display()
    );
    let state: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], step);
    FinalState {
        weights: fs_err::read(dir.join("model.safetensors")).unwrap(),
        optimizer: tensors(&dir.join("optimizer.bpk")),
        sampler: state["sampler"].clone(),
        rng: state["rng"].clone(),
    }
}

#[test]
fn quickstart_trains_on_slurm_and_locally() {
    let Some(_lock) = lock_cluster() else { return };
    const STEPS: u64 = 3;
    let (sb, spec) = quickstart("qs-slurm", STEPS as u32, 0, 2, false);
    let out = sb.ok(&["submit", &spec]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let dir = check_completed(&sb, &spec, "qs-slurm", STEPS).0;
    let attempts = jsonl(&dir.join("attempts.jsonl"));
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["attempt"], 1);
    let slurm = final_state(&dir, STEPS);

    let (sb, spec) = quickstart("qs-local", STEPS as u32, 0, 2, false);
    sb.ok(&["submit", &spec, "--executor", "local", "--wait"]);
    let dir = check_completed(&sb, &spec, "qs-local", STEPS).0;
    // Same config, seed and thread count: the local process and the Slurm job agree bit for bit.
    final_state(&dir, STEPS).assert_same(&slurm, "the Slurm run");
}

/// Attempts recorded by the run so far (one per start of `sftctl-train`).
fn attempts(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("attempts.jsonl"))
}

/// While attempt `n` of the Slurm job `job` runs, waits for step `after`, sends the batch shell
/// USR1 (what `--signal=B:USR1@...` does before the time limit), checks that the runtime
/// records `preempted` with a checkpoint of the step it stopped at, and ends Slurm's requeue
/// delay until attempt `n + 1` has started. Returns the step it stopped at.
fn preempt(
    sb: &Sandbox,
    spec: &str,
    sweep: &str,
    dir: &Path,
    job: &str,
    n: usize,
    after: usize,
) -> u64 {
    let start = Instant::now();
    let events = dir.join("events/rank-0.jsonl");
    let preempted = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| e["kind"] == "preempted")
            .cloned()
            .collect()
    };
    while attempts(dir).len() < n || jsonl(&dir.join("metrics.jsonl")).len() < after {
        assert!(
            start.elapsed() < T,
            "attempt {n} did not reach step {after}:\n{}",
            job_logs(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = Command::new("scancel")
        .args(["--signal=USR1", "--batch", job])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The runtime checkpoints, records `preempted`, requeues its job and exits 75.
    let event = loop {
        let ev = jsonl(&events);
        if let Some(e) = preempted(&ev).get(n - 1) {
            break e.clone();
        }
        assert!(
            !dir.join("result.json").exists(),
            "the run finished before USR1 arrived (make the run longer):\n{}",
            job_logs(dir)
        );
        assert!(
            start.elapsed() < T,
            "no preempted event: {ev:#?}\n{}",
            job_logs(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(event["signal"], "USR1", "{event}");
    let stopped_at = event["step"].as_u64().unwrap();
    assert!(
        jsonl(&events)
            .iter()
            .any(|e| e["kind"] == "checkpoint" && e["step"] == stopped_at),
        "no checkpoint of step {stopped_at}: {:#?}",
        jsonl(&events)
    );
    assert!(
        dir.join(format!("checkpoints/step-{stopped_at}/COMPLETE"))
            .is_file()
    );

    // Slurm holds the requeued job back (BeginTime); start it now, once the old instance is gone.
    let mut old_gone = None;
    let mut seen = Vec::new();
    let mut status_seen = Vec::new();
    while attempts(dir).len() <= n {
        assert!(
            start.elapsed() < T,
            "attempt {} never started (states seen: {seen:?}):\n{}",
            n + 1,
            job_logs(dir)
        );
        let state = squeue_jobs(&format!("sft.{sweep}."))
            .unwrap()
            .into_iter()
            .find(|(id, _)| id == job)
            .map(|(_, st)| st);
        if let Some(st) = &state {
            if seen.last() != Some(st) {
                seen.push(st.clone());
            }
            if st == "PENDING" && gone_since(&mut old_gone, dir, job) {
                // What `sftctl status` says of the requeued job: never a final state.
                let s = sb.status(spec);
                let state = only_run(&s)["state"].as_str().unwrap_or("").to_owned();
                assert!(
                    ["pending", "requeued", "running", "completing"].contains(&state.as_str()),
                    "requeued job shown as `{state}`: {s:#}"
                );
                if status_seen.last() != Some(&state) {
                    status_seen.push(state);
                }
                let _ = Command::new("scontrol")
                    .args(["update", &format!("jobid={job}"), "StartTime=now"])
                    .output();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "attempt {n}: USR1 after step {after}, stopped at step {stopped_at}; requeued, \
         Slurm states {seen:?}, sftctl status {status_seen:?}, attempt {} started after {:.1?}",
        n + 1,
        start.elapsed()
    );
    stopped_at
}

/// True once the old instance of `job` has been gone for a second (see [`old_instance_gone`]);
/// `since` remembers when it was first seen gone.
fn gone_since(since: &mut Option<Instant>, run: &Path, job: &str) -> bool {
    if !old_instance_gone(run, job) {
        *since = None;
        return false;
    }
    since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1)
}

/// Submits the quickstart shrunk to `steps` steps to Slurm as sweep `name`, sends USR1 once
/// attempt `n` reached step `after[n - 1]`, lets every requeued attempt resume, and compares the
/// final state with `expected`. Returns the steps it stopped at.
fn preempted_run(
    name: &str,
    steps: u64,
    warmup: u64,
    no_grace: bool,
    after: &[usize],
    expected: &FinalState,
) -> Vec<u64> {
    let (sb, spec) = quickstart(name, steps as u32, 10, warmup as u32, no_grace);
    let out = sb.ok(&["submit", &spec]);
    let job = out
        .split_whitespace()
        .next()
        .expect("submit prints the job id")
        .to_owned();
    let dir = only_run_dir(&sb, name);
    let stops: Vec<u64> = after
        .iter()
        .enumerate()
        .map(|(i, &a)| preempt(&sb, &spec, name, &dir, &job, i + 1, a))
        .collect();

    let s = check_completed(&sb, &spec, name, steps).1;
    let run = only_run(&s);
    assert_eq!(run["job_id"], job.as_str(), "{s:#}");
    assert_eq!(
        run["attempt"], 1,
        "Slurm requeued the job; sftctl never resubmitted"
    );
    let attempts = attempts(&dir);
    assert_eq!(attempts.len(), after.len() + 1, "{attempts:#?}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["job_id"], job.as_str(), "{a}");
        assert_eq!(a["attempt"], i as u64 + 1, "SLURM_RESTART_COUNT + 1: {a}");
        if i > 0 {
            assert_eq!(a["resumed_from_step"], stops[i - 1], "{a}");
        }
    }
    final_state(&dir, steps).assert_same(expected, "the uninterrupted run");
    stops
}

#[test]
fn preempted_slurm_job_checkpoints_requeues_and_resumes_bit_exactly() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = Instant::now();
    // Steps of the tiny model take a few hundredths of a second: long enough runs make sure
    // each USR1 lands before the end. 60 steps of 8 cross the 400-sample epoch.
    const STEPS: u64 = 60;
    const WARMUP: u64 = 20;
    // The reference: uninterrupted, through the local executor.
    let (reference, spec) = quickstart("pre-ref", STEPS as u32, 10, WARMUP as u32, false);
    reference.ok(&["submit", &spec, "--executor", "local", "--wait"]);
    let ref_dir = check_completed(&reference, &spec, "pre-ref", STEPS).0;
    let expected = final_state(&ref_dir, STEPS);
    let step_s: Vec<f64> = jsonl(&ref_dir.join("metrics.jsonl"))
        .iter()
        .map(|m| m["step_time_s"].as_f64().unwrap_or(0.0))
        .collect();
    let mean = step_s.iter().sum::<f64>() / step_s.len() as f64;
    eprintln!(
        "reference: {:.1?}, mean step time {mean:.3} s",
        t0.elapsed()
    );

    // The same run on Slurm with `--stop-grace-s 0`: a signal abandons the step in progress
    // (usually mid-accumulation: two micro-batches per step), which the resumed job redoes.
    // Interrupted during warmup, then during the decay after the periodic checkpoint of step 30.
    let stops = preempted_run("pre-slurm", STEPS, WARMUP, true, &[1, 31], &expected);
    assert!(
        stops[0] < WARMUP,
        "first stop at step {}, after warmup",
        stops[0]
    );
    assert!(
        (31..STEPS).contains(&stops[1]),
        "second stop at step {}",
        stops[1]
    );
    // With the default grace (what `sftctl submit` runs): the step in progress completes, then
    // the checkpoint.
    let stops = preempted_run("pre-grace", STEPS, WARMUP, false, &[25], &expected);
    assert!((25..STEPS).contains(&stops[0]), "stop at step {}", stops[0]);
    preempted_local_run(&expected);
    eprintln!("preemption test: {:.1?}", t0.elapsed());
}

/// The same preemption through the local executor: USR1 to the job's batch shell makes the
/// trainer checkpoint and exit 75, and the executor starts the script again (as Slurm does for a
/// requeue), which resumes and ends bit-identical to the uninterrupted run.
fn preempted_local_run(expected: &FinalState) {
    const STEPS: u64 = 60;
    let (sb, spec) = quickstart("pre-local", STEPS as u32, 10, 20, false);
    sb.ok(&["submit", &spec, "--executor", "local"]);
    let dir = only_run_dir(&sb, "pre-local");
    let start = Instant::now();
    let job = loop {
        let jobs: Vec<serde_json::Value> = fs_err::read_dir(dir.join("local"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| fs_err::read_to_string(e.path()).ok())
                    .filter_map(|t| serde_json::from_str(&t).ok())
                    .collect()
            })
            .unwrap_or_default();
        if let [j] = jobs.as_slice()
            && j["state"] == "running"
            && jsonl(&dir.join("metrics.jsonl")).len() >= 5
        {
            break j.clone();
        }
        assert!(
            start.elapsed() < T,
            "the local job never ran 5 steps:\n{}",
            job_logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = job["pid"]
        .as_u64()
        .expect("pid of the batch shell")
        .to_string();
    let o = Command::new("kill").args(["-USR1", &pid]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let s = check_completed(&sb, &spec, "pre-local", STEPS).1;
    assert_eq!(only_run(&s)["state"], "completed", "{s:#}");
    let job_file = dir
        .join("local")
        .join(format!("{}.json", job["job_id"].as_str().unwrap()));
    let after: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&job_file).unwrap()).unwrap();
    assert_eq!(after["requeues"], 1, "{after:#}");
    assert_eq!(after["state"], "completed", "{after:#}");
    let attempts = attempts(&dir);
    assert_eq!(attempts.len(), 2, "{attempts:#?}\n{}", job_logs(&dir));
    let stopped = attempts[1]["resumed_from_step"].as_u64().unwrap();
    assert!((5..STEPS).contains(&stopped), "resumed from step {stopped}");
    final_state(&dir, STEPS).assert_same(expected, "the uninterrupted run");
}

/// A job with a one-minute time limit stops by itself before the limit: rank 0 asked Slurm for
/// the time left (`squeue -o %L`), and once one more step plus a checkpoint would not fit, the
/// trainer checkpoints, records `preempted` with signal `deadline` and requeues its job, whose
/// next attempt resumes from that checkpoint. `signal_seconds = 0` leaves out `--signal`
/// (Slurm may send it up to a minute early, which would race the deadline here).
#[test]
fn job_stops_itself_before_its_time_limit() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, spec) = quickstart("deadline", 100_000, 0, 2, false);
    let text = fs_err::read_to_string(sb.path().join(&spec)).unwrap();
    let text = text
        .replacen("time = \"00:10:00\"", "time = \"1\"\nsignal_seconds = 0", 1)
        .replacen("epochs = 2", "epochs = 10000", 1);
    assert!(text.contains("epochs = 10000"), "{text}");
    assert!(text.contains("signal_seconds = 0"), "{text}");
    sb.write(&spec, &text);
    let out = sb.ok(&["submit", &spec]);
    let job = out.split_whitespace().next().expect("job id").to_owned();
    let dir = only_run_dir(&sb, "deadline");
    let script = fs_err::read_to_string(dir.join("job.sh")).unwrap();
    assert!(!script.contains("--signal"), "{script}");
    let start = Instant::now();
    let events = dir.join("events/rank-0.jsonl");
    let event = loop {
        if let Some(e) = jsonl(&events)
            .into_iter()
            .find(|e| e["kind"] == "preempted")
        {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no preempted event within 240 s:\n{}",
            job_logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // How long the trainer ran before it stopped itself, from its own records: the job may
    // have waited in the queue after the submit, and the limit counts from its start.
    let at = |v: &serde_json::Value| {
        serde_json::from_value::<sftctl_ledger::Timestamp>(v.clone())
            .unwrap()
            .age_s()
    };
    let took = Duration::from_secs_f64(at(&attempts(&dir)[0]["started_at"]) - at(&event["at"]));
    assert_eq!(event["signal"], "deadline", "{event}\n{}", job_logs(&dir));
    let step = event["step"].as_u64().unwrap();
    assert!(step > 0, "{event}");
    assert!(
        dir.join(format!("checkpoints/step-{step}/COMPLETE"))
            .is_file(),
        "{}",
        job_logs(&dir)
    );
    // Stopped with the margin to spare, well before the 60 s limit.
    assert!(
        took < Duration::from_secs(55),
        "stopped after running {took:?}"
    );
    // The job requeued itself; start it now and see the next attempt resume from that step.
    let mut old_gone = None;
    while attempts(&dir).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(400),
            "no second attempt:\n{}",
            job_logs(&dir)
        );
        if gone_since(&mut old_gone, &dir, &job) {
            let _ = Command::new("scontrol")
                .args(["update", &format!("jobid={job}"), "StartTime=now"])
                .output();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(attempts(&dir)[1]["resumed_from_step"], step);
    sb.ok(&["cancel", &spec]);
    eprintln!("stopped itself at step {step} after {took:.1?}");
}

/// A run whose loss turns non-finite stops itself as diverged (exit 3, `result.json`, a
/// `diverged` event); `status` shows `diverged`, not `failed`; the report's table says so; and
/// `submit --retry-failed` leaves it alone: a resume is bit-exact and would diverge again.
#[test]
fn a_diverging_run_shows_as_diverged_and_is_not_retried() {
    // lr 1e30: AdamW's first update is about ±1e30 per weight, so the next forward overflows.
    let (sb, spec) = quickstart_sweep(
        "qs-diverge",
        false,
        &[
            ("lr = [3e-3]", "lr = [1e30]".to_owned()),
            ("max_steps = 0", "max_steps = 6\ngrad_clip = 0".to_owned()),
        ],
        "",
    );
    let o = sb.sftctl(&["submit", &spec, "--executor", "local", "--wait"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not complete"), "{stderr}");
    let status = sb.status(&spec);
    let run = only_run(&status);
    assert_eq!(run["state"], "diverged", "{status:#}");
    assert_eq!(status["counts"]["diverged"], 1, "{status:#}");
    let dir = only_run_dir(&sb, "qs-diverge");
    let result: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "diverged", "{result:#}");
    let step = jsonl(&dir.join("events/rank-0.jsonl"))
        .into_iter()
        .find(|e| e["kind"] == "diverged")
        .unwrap_or_else(|| panic!("no diverged event\n{}", job_logs(&dir)))["step"]
        .as_u64()
        .unwrap();
    assert!((1..6).contains(&step), "diverged at step {step}");
    let table = sb.ok(&["status", &spec]);
    assert!(table.contains("diverged"), "{table}");
    // The report counts no run in its row and names the diverged one under the table.
    let o = sb.sftctl(&["report", &spec]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(out.contains("0/1"), "{out}");
    assert!(
        err.contains("not counted: lr=1e30") && err.contains("diverged"),
        "{err}"
    );

    let o = sb.sftctl(&["submit", &spec, "--retry-failed", "--executor", "local"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("0 job(s) submitted"), "{stderr}");
    assert_eq!(jsonl(&dir.join("attempts.jsonl")).len(), 1);
}

/// The README's main job as it stands: `sftctl submit examples/quickstart.toml --executor local
/// --wait` on an unmodified copy of `examples/` trains all four grid points (two learning rates
/// × two seeds, 2 epochs of the bundled data) to the end, and `status` and `report` read them.
#[test]
fn readme_quickstart_trains_every_grid_point() {
    let sb = Sandbox::with_examples(false);
    let spec = "examples/quickstart.toml";
    sb.ok(&["submit", spec, "--executor", "local", "--wait"]);
    let status = sb.status(spec);
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{status:#}");
    for r in runs {
        assert_eq!(r["state"], "completed", "{status:#}");
        assert_eq!(r["samples_seen"], r["total_samples"], "{status:#}");
    }
    let mut names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lr=0.001,seed=0",
            "lr=0.001,seed=1",
            "lr=0.003,seed=0",
            "lr=0.003,seed=1"
        ]
    );
    for dir in fs_err::read_dir(sb.path().join("ledger-data/sweeps/quickstart/runs")).unwrap() {
        let metrics = jsonl(&dir.unwrap().path().join("metrics.jsonl"));
        let loss = |i: usize| metrics[i]["loss"].as_f64().unwrap();
        assert!(loss(metrics.len() - 1) < loss(0), "the loss falls");
    }
    let report = sb.ok(&["report", spec, "--rows", "lr"]);
    assert_eq!(report.matches(" 2/2").count(), 2, "{report}");
}
