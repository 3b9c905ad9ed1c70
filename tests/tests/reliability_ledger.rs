//! Reliability of the ledger under concurrency and crashes: many jobs write their runs' records
//! through the real `RunWriter` while `sftctl status`, `sftctl report` and the library readers
//! read, and the writers are killed with SIGKILL at every named failpoint of the write protocol
//! and at random moments. Nothing acknowledged is lost or torn, no read fails, the killed runs show as failed,
//! and a retry resumes each from its last complete checkpoint. Reproduce with
//! `cargo test -p sftctl-tests --test reliability_ledger -- --nocapture` (`REL_SEED=<n>` replays
//! the random kills of a run).

use sftctl_ledger::failpoint::NAMES;
use sftctl_ledger::io::read_jsonl;
use sftctl_ledger::writer::latest_checkpoint;
use sftctl_ledger::*;
use sftctl_tests::sftctl_bin;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const STEPS: u64 = 20;
/// Seeds armed with a failpoint (each failpoint at its 1st and 3rd hit), then seeds killed at
/// random moments by the test.
const ARMED: u64 = 2 * NAMES.len() as u64;
const RANDOM: u64 = 8;

fn writer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sftctl-rel-writer")
}

fn spec(dir: &Path, fail: bool) -> String {
    spec_with(
        dir,
        if fail { ", REL_FAILPOINTS = \"1\"" } else { "" },
        ARMED + RANDOM,
    )
}

fn spec_with(dir: &Path, vars: &str, n_seeds: u64) -> String {
    let seeds: Vec<String> = (0..n_seeds).map(|s| s.to_string()).collect();
    format!(
        "[sweep]\nname = \"crash\"\nledger = \"ledger\"\nexecutor = \"local\"\nmax_parallel = 8\n\
         [model]\npath = \"model\"\n[run]\nbinary = \"{bin}\"\n[train]\nmax_steps = {STEPS}\n\
         [grid]\nseed = [{seeds}]\n[env]\nvars = {{ REL_ACK_DIR = \"{acks}\"{fp} }}\n",
        bin = writer_bin(),
        seeds = seeds.join(", "),
        acks = dir.join("acks").display(),
        fp = vars,
    )
}

fn loss_at(seed: u64, step: u64) -> f64 {
    1.0 / (step as f64 + 1.0) + seed as f64 * 1e-3
}

/// xorshift64*: the random kill schedule, reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn run_dirs(sweep: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(sweep.join("runs"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Everything a reader may check about a run at any moment; an error is a failed read.
fn check_readable(run: &Path) -> Result<(), String> {
    let snap = read_run(run, true).map_err(|e| format!("read_run: {e}"))?;
    if let Some(m) = &snap.last_metric
        && !(1..=STEPS).contains(&m.step)
    {
        return Err(format!("impossible last metric {m:?}"));
    }
    if let Some((step, dir)) = latest_checkpoint(run).map_err(|e| e.to_string())? {
        // A checkpoint that counts is whole: its marker lists files that hold that step.
        let marker: CheckpointMarker = io::read_json(&dir.join("COMPLETE"))
            .map_err(|e| e.to_string())?
            .ok_or("COMPLETE vanished")?;
        if marker.step != step || marker.files != ["model.bin", "optimizer.bin"] {
            return Err(format!("bad marker {marker:?}"));
        }
        let model = std::fs::read_to_string(dir.join("model.bin")).map_err(|e| e.to_string())?;
        if model != format!("weights@{step}").repeat(64) {
            return Err(format!("checkpoint step-{step} holds torn weights"));
        }
    }
    Ok(())
}

fn config_seed(run: &Path) -> u64 {
    let c: serde_json::Value = io::read_json(&run.join("config.json")).unwrap().unwrap();
    c["train"]["seed"].as_u64().unwrap()
}

/// Records acknowledged by the writer of `run_id`, as (kind, value) lines.
fn acks(dir: &Path, run_id: &str) -> Vec<(String, u64)> {
    std::fs::read_to_string(dir.join("acks").join(format!("{run_id}.acks")))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let kind = w.next().unwrap().to_owned();
            (kind, w.next().and_then(|v| v.parse().ok()).unwrap_or(0))
        })
        .collect()
}

/// Every acknowledged record is in the ledger, whole and with the value written.
fn assert_acks_survived(dir: &Path, run: &Path) {
    let id = run.file_name().unwrap().to_string_lossy().into_owned();
    let seed = config_seed(run);
    let d = layout::RunDir::at(run);
    let (metrics, _) = read_jsonl::<MetricRecord>(&d.metrics()).unwrap();
    let (attempts, _) = read_jsonl::<Attempt>(&d.attempts()).unwrap();
    let mut n_attempts = 0;
    for (kind, v) in acks(dir, &id) {
        match kind.as_str() {
            "metric" => assert!(
                metrics.iter().any(
                    |m| m.step == v // serde_json without `float_roundtrip` may read back 1 ulp off.
                    && (m.loss - loss_at(seed, v)).abs() < 1e-12
                ),
                "run {id} (seed {seed}): acknowledged metric of step {v} is missing or torn: {:?}",
                std::fs::read_to_string(d.metrics())
            ),
            "checkpoint" => {
                // A later attempt may have replaced it by a newer one, never by nothing.
                let (latest, _) = latest_checkpoint(run)
                    .unwrap()
                    .unwrap_or((0, PathBuf::new()));
                assert!(latest >= v, "run {id}: acknowledged checkpoint {v} lost");
            }
            "attempt" => n_attempts += 1,
            "result" => assert!(d.result().is_file(), "run {id}: result lost"),
            _ => panic!("unknown ack {kind}"),
        }
    }
    assert!(
        attempts.len() >= n_attempts,
        "run {id}: {n_attempts} acknowledged attempts, {} in the ledger",
        attempts.len()
    );
}

fn status(spec: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(sftctl_bin())
        .args(["status", "--json"])
        .arg(spec)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "status exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("status printed bad JSON: {e}"))
}

/// `sftctl report` (the real binary) twice: the early-dynamics ranking over the first 40
/// samples (5 steps of 8) as JSON, whose every ranked run must carry exactly what its writer
/// recorded (gradient norm 1 at every step, the mean of `loss_at(seed, 1..=5)` over 5 steps), so
/// a torn or half-read metric shows; and the results table as JSON with running runs included,
/// every run of which must be a grid point (with a run directory unless it is called
/// unsubmitted). Returns the runs ranked.
fn report(spec: &Path, sweep: &Path) -> Result<usize, String> {
    let run = |args: &[&str]| -> Result<serde_json::Value, String> {
        let out = Command::new(sftctl_bin())
            .arg("report")
            .arg(spec)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "report {args:?} exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "report {args:?} printed bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    let early = run(&["--early", "40", "--format", "json"])?;
    let ranking = early["ranking"]
        .as_array()
        .ok_or_else(|| format!("no ranking: {early:#}"))?;
    for r in ranking {
        let id = r["run_id"].as_str().unwrap_or_default();
        let dir = sweep.join("runs").join(id);
        if !dir.join("config.json").is_file() {
            return Err(format!("report ranked an unknown run `{id}`: {r}"));
        }
        let seed = config_seed(&dir);
        let want = (1..=5).map(|s| loss_at(seed, s)).sum::<f64>() / 5.0;
        let loss = r["mean_loss"].as_f64().unwrap_or(f64::NAN);
        if r["steps"] != 5 || r["mean_grad_norm"] != 1.0 || (loss - want).abs() > 1e-12 * want.abs()
        {
            return Err(format!(
                "report's early statistics of `{id}` (seed {seed}) are not what was written \
                 (5 steps, grad norm 1, mean loss {want}): {r}"
            ));
        }
    }
    let table = run(&["--format", "json", "--include-running"])?;
    let excluded = table["excluded"].as_array().cloned().unwrap_or_default();
    let not_submitted: BTreeSet<&str> = excluded
        .iter()
        .filter(|e| e["outcome"] == "not_submitted")
        .filter_map(|e| e["run_id"].as_str())
        .collect();
    let rows = table["rows"].as_array().into_iter().flatten();
    let ids: BTreeSet<&str> = rows
        .flat_map(|r| r["run_ids"].as_array().into_iter().flatten())
        .chain(excluded.iter().map(|e| &e["run_id"]))
        .filter_map(|id| id.as_str())
        .collect();
    // Every run the table names is a grid point; one it does not call unsubmitted has a run
    // directory.
    for id in &ids {
        let known =
            not_submitted.contains(id) || sweep.join("runs").join(id).join("config.json").is_file();
        if !known || id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "report's table names an unknown run `{id}`: {table:#}"
            ));
        }
    }
    if ids.len() as u64 > ARMED + RANDOM {
        return Err(format!(
            "report's table names {} runs: {table:#}",
            ids.len()
        ));
    }
    Ok(ranking.len())
}

/// Runs `submit` while readers poll the ledger, `sftctl status` and `sftctl report`, killing
/// random writers. Returns (reads, status calls, report calls, runs ranked by report, random
/// kills).
fn submit_under_fire(
    dir: &Path,
    extra: &[&str],
    rng: &mut Rng,
    random_kills: bool,
) -> (usize, usize, usize, usize, usize) {
    let spec_path = dir.join("sweep.toml");
    let sweep = dir.join("ledger/sweeps/crash");
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let errors: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let reader = {
        let (done, reads, errors, sweep) =
            (done.clone(), reads.clone(), errors.clone(), sweep.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                for run in run_dirs(&sweep) {
                    if let Err(e) = check_readable(&run) {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e}", run.display()));
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let statuses = {
        let (done, errors, spec_path) = (done.clone(), errors.clone(), spec_path.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                if let Err(e) = status(&spec_path) {
                    errors.lock().unwrap().push(e);
                }
                n += 1;
            }
            n
        })
    };
    let reports = {
        let (done, errors, spec_path, sweep) = (
            done.clone(),
            errors.clone(),
            spec_path.clone(),
            sweep.clone(),
        );
        std::thread::spawn(move || {
            let (mut n, mut ranked) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                match report(&spec_path, &sweep) {
                    Ok(r) => ranked += r,
                    Err(e) => errors.lock().unwrap().push(e),
                }
                n += 1;
            }
            (n, ranked)
        })
    };
    let mut submit = Command::new(sftctl_bin())
        .arg("submit")
        .arg(&spec_path)
        .args(["--executor", "local", "--wait"])
        .args(extra)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Random kills: each unarmed writer dies at a random step of its first attempt.
    let mut kill_at: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut killed = BTreeSet::new();
    let start = Instant::now();
    while submit.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(240), "submit hangs");
        if extra.is_empty() && random_kills {
            for run in run_dirs(&sweep) {
                if run.join("config.json").is_file() && config_seed(&run) >= ARMED {
                    let at = *kill_at
                        .entry(run.clone())
                        .or_insert_with(|| 1 + rng.next() % (STEPS - 1));
                    let hb: Option<Heartbeat> =
                        io::read_json(&layout::RunDir::at(&run).heartbeat(0))
                            .ok()
                            .flatten();
                    if let Some(h) = hb
                        && h.step >= at
                        && !killed.contains(&run)
                    {
                        let cmdline =
                            std::fs::read(format!("/proc/{}/cmdline", h.pid)).unwrap_or_default();
                        if String::from_utf8_lossy(&cmdline).contains("sftctl-rel-writer") {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(h.pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                            killed.insert(run.clone());
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    done.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let n_status = statuses.join().unwrap();
    let (n_report, ranked) = reports.join().unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "reads failed while writers were killed: {errors:#?}"
    );
    (
        reads.load(Ordering::SeqCst),
        n_status,
        n_report,
        ranked,
        killed.len(),
    )
}

#[test]
fn writers_killed_at_every_failpoint_and_at_random_lose_nothing_and_resume() {
    let seed = std::env::var("REL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Timestamp::now().0.unix_timestamp_nanos() as u64 | 1);
    eprintln!("REL_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("acks")).unwrap();
    std::fs::write(dir.join("sweep.toml"), spec(dir, true)).unwrap();
    let sweep = dir.join("ledger/sweeps/crash");

    let (reads, n_status, n_report, ranked, random_kills) =
        submit_under_fire(dir, &[], &mut rng, true);
    let st = status(&dir.join("sweep.toml")).unwrap();
    let runs = st["runs"].as_array().unwrap();
    assert_eq!(runs.len() as u64, ARMED + RANDOM);
    let mut failed = 0;
    for run in run_dirs(&sweep) {
        assert_acks_survived(dir, &run);
        check_readable(&run).unwrap();
        let id = run.file_name().unwrap().to_string_lossy().into_owned();
        let row = runs.iter().find(|r| r["run_id"] == id.as_str()).unwrap();
        let completed = layout::RunDir::at(&run).result().is_file();
        if config_seed(&run) < ARMED {
            // Every armed failpoint fires within 20 steps.
            assert!(
                !completed,
                "seed {} was armed but finished",
                config_seed(&run)
            );
        }
        if completed {
            assert_eq!(row["state"], "completed", "{row:#}");
        } else {
            // A killed job is shown as such: failed, with the signal's exit code.
            assert_eq!(row["state"], "failed", "{row:#}");
            assert_eq!(row["reason"], "exit code 137", "{row:#}");
            failed += 1;
        }
    }
    assert!(failed as u64 >= ARMED, "{failed} runs failed");
    let ckpt_before: BTreeMap<PathBuf, u64> = run_dirs(&sweep)
        .into_iter()
        .map(|r| {
            let s = latest_checkpoint(&r).unwrap().map_or(0, |c| c.0);
            (r, s)
        })
        .collect();

    // The retry, without failpoints: every run resumes from its last complete checkpoint.
    std::fs::write(dir.join("sweep.toml"), spec(dir, false)).unwrap();
    let (reads2, n_status2, n_report2, ranked2, _) =
        submit_under_fire(dir, &["--retry-failed"], &mut rng, true);
    let st = status(&dir.join("sweep.toml")).unwrap();
    for row in st["runs"].as_array().unwrap() {
        assert_eq!(row["state"], "completed", "{row:#}");
        assert_eq!(row["step"], STEPS, "{row:#}");
    }
    for run in run_dirs(&sweep) {
        assert_acks_survived(dir, &run);
        let d = layout::RunDir::at(&run);
        let (attempts, _) = read_jsonl::<Attempt>(&d.attempts()).unwrap();
        let last = attempts.last().unwrap();
        if ckpt_before[&run] < STEPS {
            assert_eq!(
                last.resumed_from_step,
                ckpt_before[&run],
                "{}: did not resume from its last complete checkpoint",
                run.display()
            );
        }
        // Every step's metric is whole in the log (a torn line of a killed attempt is skipped).
        let (metrics, torn) = read_jsonl::<MetricRecord>(&d.metrics()).unwrap();
        let steps: BTreeSet<u64> = metrics.iter().map(|m| m.step).collect();
        assert_eq!(steps, (1..=STEPS).collect(), "{}", run.display());
        assert!(torn <= 1, "{}: {torn} torn lines", run.display());
        assert_eq!(latest_checkpoint(&run).unwrap().unwrap().0, STEPS);
    }
    eprintln!(
        "runs {}, failpoints {} x2, random kills {random_kills}, library reads {}, status calls {}, \
         report calls {} (runs ranked {})",
        ARMED + RANDOM,
        NAMES.len(),
        reads + reads2,
        n_status + n_status2,
        n_report + n_report2,
        ranked + ranked2
    );
    // The reports did read runs mid-write: some ranked runs (each checked value by value).
    assert!(ranked + ranked2 > 0, "report never ranked a run");
}

#[test]
fn a_full_disk_at_every_failpoint_fails_the_write_and_the_retry_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("acks")).unwrap();
    let spec_path = dir.join("sweep.toml");
    std::fs::write(
        &spec_path,
        spec_with(dir, ", REL_FAILPOINTS = \"1\", REL_ENOSPC = \"1\"", ARMED),
    )
    .unwrap();
    let sweep = dir.join("ledger/sweeps/crash");
    let mut rng = Rng(1);
    submit_under_fire(dir, &[], &mut rng, false);
    let st = status(&spec_path).unwrap();
    let mut before = BTreeMap::new();
    for run in run_dirs(&sweep) {
        assert_acks_survived(dir, &run);
        check_readable(&run).unwrap();
        let id = run.file_name().unwrap().to_string_lossy().into_owned();
        let row = st["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run_id"] == id.as_str())
            .unwrap();
        // The writer reports the full disk and stops: a failed run, not a crash or a hang.
        assert_eq!(row["state"], "failed", "{row:#}");
        assert_eq!(row["reason"], "exit code 1", "{row:#}");
        let log = std::fs::read_dir(run.join("logs"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .collect::<String>();
        assert!(log.contains("No space left on device"), "{log}");
        // No temporary is left behind by a failed atomic write.
        let mut all = Vec::new();
        let mut stack = vec![run.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
                all.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        assert!(!all.iter().any(|n| n.contains(".tmp.")), "{all:?}");
        before.insert(
            run.clone(),
            latest_checkpoint(&run).unwrap().map_or(0, |c| c.0),
        );
    }
    std::fs::write(&spec_path, spec_with(dir, "", ARMED)).unwrap();
    submit_under_fire(dir, &["--retry-failed"], &mut rng, false);
    let st = status(&spec_path).unwrap();
    for row in st["runs"].as_array().unwrap() {
        assert_eq!(row["state"], "completed", "{row:#}");
    }
    for run in run_dirs(&sweep) {
        let (attempts, _) = read_jsonl::<Attempt>(&layout::RunDir::at(&run).attempts()).unwrap();
        assert_eq!(attempts.last().unwrap().resumed_from_step, before[&run]);
        assert_eq!(latest_checkpoint(&run).unwrap().unwrap().0, STEPS);
    }
}
