//! Slurm misbehaving: `sbatch` refusing part-way through a sweep, `squeue`/`sacct` failing,
//! printing nothing or answering slowly, and the controller down while `status` and `submit`
//! run. sftctl must say what failed (with Slurm's own words), never show a guess as a state,
//! and never leave a half-submitted point. Uses the real test cluster (one test at a time) and
//! stand-in commands only for what it cannot produce. Reproduce with
//! `cargo test -p sftctl-tests --test reliability_slurm` (as root).

use sftctl_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// A directory of stand-ins: each named command is a script, the rest link to the real ones.
fn stand_ins(sb: &Sandbox, scripts: &[(&str, &str)]) -> PathBuf {
    let bin = sb.path().join("slurm-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for c in ["sbatch", "squeue", "sacct", "scancel"] {
        let p = bin.join(c);
        let _ = std::fs::remove_file(&p);
        match scripts.iter().find(|(n, _)| *n == c) {
            Some((_, body)) => std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap(),
            None => std::os::unix::fs::symlink(format!("/usr/bin/{c}"), &p).unwrap(),
        }
    }
    Command::new("chmod")
        .args(["-R", "a+rwx"])
        .arg(&bin)
        .status()
        .unwrap();
    bin
}

/// `sftctl args` as the test user with `SFTCTL_SLURM_BIN=bin`.
fn sftctl_with(sb: &Sandbox, bin: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", TEST_USER, "--", "env"])
        .arg(format!("SFTCTL_SLURM_BIN={}", bin.display()))
        .arg(sftctl_bin())
        .args(args)
        .current_dir(sb.path())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn sbatch_refusing_mid_sweep_leaves_no_half_submitted_point() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "refuse.toml";
    sb.write(
        spec,
        &spec_text("refuse", "array = false\n[grid]\nseed = [0, 1, 2]\n"),
    );
    // The check passes (`--test-only` goes to the real sbatch); the second real submission is
    // refused with the message Slurm prints for an account it does not know (this cluster does
    // not enforce associations, so it cannot refuse one by itself).
    let count = sb.path().join("slurm-bin/count");
    let bin = stand_ins(
        &sb,
        &[(
            "sbatch",
            &format!(
                "case \" $* \" in *\" --test-only \"*) exec /usr/bin/sbatch \"$@\";; esac\n\
                 n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}\n\
                 if [ $n = 2 ]; then echo 'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified' >&2; exit 1; fi\n\
                 exec /usr/bin/sbatch \"$@\"",
                c = count.display()
            ),
        )],
    );
    let o = sftctl_with(&sb, &bin, &["submit", spec]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Invalid account") && err.contains("Slurm refused batch"),
        "{err}"
    );
    assert!(
        err.contains("1 run(s) submitted before it are recorded"),
        "{err}"
    );
    let s = sb.status(spec);
    let submitted: Vec<_> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] != "unsubmitted")
        .collect();
    assert_eq!(submitted.len(), 1, "{s:#}");
    // The refused batch is void, not an intent a later submit would have to guess about.
    let batches: Vec<serde_json::Value> =
        std::fs::read_dir(sb.path().join("ledger/sweeps/refuse/batches"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
    let mut st: Vec<&str> = batches
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    st.sort();
    assert_eq!(st, ["submitted", "void"], "{batches:#?}");
    // The next submit (Slurm willing again) submits exactly the two missing points.
    let out = sb.ok(&["submit", spec]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let s = sb.status(spec);
    let mut jobs: Vec<String> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["attempt"], 1, "{r}");
            r["job_id"].as_str().unwrap().to_owned()
        })
        .collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 3);
    sb.ok(&["cancel", spec]);
}

#[test]
fn squeue_and_sacct_failing_empty_or_slow() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "flaky.toml";
    sb.write(
        spec,
        &spec_text(
            "flaky",
            "[env]\nvars = { SFT_STEPS = \"300\", SFT_STEP_S = \"0.2\" }\n",
        ),
    );
    sb.ok(&["submit", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "running")).unwrap();
    let mode = sb.path().join("slurm-bin/mode");
    let wrapper = |cmd: &str, fail_msg: &str| {
        format!(
            "case \"$(cat {m})\" in\n\
             fail-{cmd}|fail-both) echo '{fail_msg}' >&2; exit 1;;\n\
             empty-{cmd}|empty-both) exit 0;;\n\
             slow-{cmd}) echo $$ > {m}.{cmd}.pid; sleep 4;;\n\
             esac\nexec /usr/bin/{cmd} \"$@\"",
            m = mode.display()
        )
    };
    let bin = stand_ins(
        &sb,
        &[
            (
                "squeue",
                &wrapper(
                    "squeue",
                    "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
                ),
            ),
            (
                "sacct",
                &wrapper(
                    "sacct",
                    "sacct: error: Problem talking to the database: Connection refused",
                ),
            ),
        ],
    );
    let status = |m: &str| {
        std::fs::write(&mode, m).unwrap();
        let start = Instant::now();
        let o = sftctl_with(&sb, &bin, &["status", spec, "--json"]);
        (o, start.elapsed())
    };
    // squeue fails: an error with Slurm's words, and no table that could be read as states.
    for m in ["fail-squeue", "fail-both"] {
        let (o, _) = status(m);
        assert_eq!(o.status.code(), Some(2), "{m}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{m}: printed states: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("squeue") && err.contains("Unable to contact slurm controller"),
            "{m}: {err}"
        );
    }
    // squeue prints nothing: sacct knows the job is running (once slurmdbd has heard of its
    // start; until then it says PENDING, which status shows as Slurm's word for it).
    let start = Instant::now();
    loop {
        let (o, _) = status("empty-squeue");
        assert!(o.status.success(), "{}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let state = s["runs"][0]["state"].clone();
        assert!(state == "running" || state == "pending", "{s:#}");
        if state == "running" {
            eprintln!("sacct reported the start after {:?}", start.elapsed());
            break;
        }
        assert!(
            start.elapsed() < T,
            "sacct never reported the job running: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // squeue forgot the job and sacct fails: an error, not a guess.
    std::fs::write(bin.join("squeue"), "#!/bin/bash\nexit 0\n").unwrap();
    let (o, _) = status("fail-sacct");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Problem talking to the database"));
    // Both print nothing while the job runs and heartbeats: not a final state that
    // `submit --retry-failed` would resubmit (that would run the point twice).
    let (o, _) = status("empty-sacct");
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let state = s["runs"][0]["state"].as_str().unwrap().to_owned();
    assert!(
        !["failed", "cancelled", "lost", "completed", "timeout"].contains(&state.as_str()),
        "a live job with a fresh heartbeat shown as `{state}`: {s:#}"
    );
    let o = sftctl_with(&sb, &bin, &["submit", spec, "--retry-failed"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "resubmitted a live job"
    );
    // sacct answers slowly while squeue has forgotten the job: waited for, and the answer is
    // right.
    std::fs::write(&mode, "").unwrap();
    let sacct_wrapper = fs_err::read_to_string(bin.join("sacct")).unwrap();
    assert!(
        sacct_wrapper.contains("slow-sacct) echo $$"),
        "{sacct_wrapper}"
    );
    let (o, took) = status("slow-sacct");
    assert!(o.status.success(), "{}", text(&o));
    assert!(took >= Duration::from_secs(4), "{took:?}");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["runs"][0]["state"], "running", "{s:#}");
    // Past SFTCTL_SLURM_TIMEOUT_S the slow sacct is killed: exit 2 naming sacct and the limit,
    // no states printed, the sweep's own records (batches, intents) unchanged and no temporary
    // file left in the ledger. (The run's directory is left out: its job keeps writing.)
    let ledger = sb.path().join("ledger");
    let records = || -> Vec<(String, String)> {
        tree_digest(&ledger)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("sweeps/flaky/runs/"))
            .collect()
    };
    let before = records();
    let pid_file = sb.path().join("slurm-bin/mode.sacct.pid");
    std::fs::remove_file(&pid_file).unwrap();
    std::fs::write(&mode, "slow-sacct").unwrap();
    let t0 = Instant::now();
    let o = sftctl_env(
        &sb,
        &bin,
        &[("SFTCTL_SLURM_TIMEOUT_S", "2")],
        &["status", spec, "--json"],
    );
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty(), "printed states: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sacct")
            && err.contains("did not finish within 2 s and was killed")
            && err.contains("SFTCTL_SLURM_TIMEOUT_S"),
        "{err}"
    );
    assert!(took < Duration::from_secs(4), "status took {took:?}");
    assert!(dead(&pid_file), "the slow sacct outlived its time limit");
    assert_eq!(records(), before, "status changed the sweep's records");
    let torn: Vec<String> = tree_digest(&ledger)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.contains(".tmp."))
        .collect();
    assert!(torn.is_empty(), "temporary files left: {torn:?}");
    eprintln!("slow sacct: status exited 2 after {took:.1?}");
    // Slow answers are waited for, and the answer is right.
    std::fs::write(
        bin.join("squeue"),
        format!("#!/bin/bash\n{}\n", wrapper("squeue", "x")),
    )
    .unwrap();
    let (o, took) = status("slow-squeue");
    assert!(o.status.success(), "{}", text(&o));
    assert!(took >= Duration::from_secs(4));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["runs"][0]["state"], "running", "{s:#}");
    sb.ok(&["cancel", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
}

/// `sftctl args` as the test user with `SFTCTL_SLURM_BIN=bin` and `env`.
fn sftctl_env(sb: &Sandbox, bin: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new("runuser");
    c.args(["-u", TEST_USER, "--", "env"])
        .arg(format!("SFTCTL_SLURM_BIN={}", bin.display()));
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(sftctl_bin())
        .args(args)
        .current_dir(sb.path())
        .output()
        .unwrap()
}

/// True when the process whose pid is in `file` is gone (or a zombie awaiting its reaper).
fn dead(file: &Path) -> bool {
    let pid = std::fs::read_to_string(file).unwrap();
    let pid = pid.trim();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    stat.map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
}

#[test]
fn slurm_commands_past_their_time_limit_are_killed() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "hang.toml";
    sb.write(
        spec,
        &spec_text(
            "hang",
            "[env]\nvars = { SFT_STEPS = \"100\", SFT_STEP_S = \"0.2\" }\n",
        ),
    );
    let dir = sb.path().join("slurm-bin");
    let (sbatch_pid, squeue_pid) = (dir.join("sbatch.pid"), dir.join("squeue.pid"));
    // sbatch submits (the real one), then never answers; squeue never answers at all. The
    // `--test-only` check and sacct are the real commands.
    let bin = stand_ins(
        &sb,
        &[
            (
                "sbatch",
                &format!(
                    "case \" $* \" in *\" --test-only \"*) exec /usr/bin/sbatch \"$@\";; esac\n\
                     echo $$ > {p}\n/usr/bin/sbatch \"$@\"\nsleep 300",
                    p = sbatch_pid.display()
                ),
            ),
            (
                "squeue",
                &format!("echo $$ > {p}\nsleep 300", p = squeue_pid.display()),
            ),
        ],
    );
    let limit = [("SFTCTL_SLURM_TIMEOUT_S", "3")];

    // submit: the sbatch that went through but never answered is killed after 3 s; exit 2,
    // and the batch is not marked refused (it may have been submitted).
    let t0 = Instant::now();
    let o = sftctl_env(&sb, &bin, &limit, &["submit", spec]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sbatch")
            && err.contains("did not finish within 3 s and was killed")
            && err.contains("SFTCTL_SLURM_TIMEOUT_S")
            && err.contains("may or may not have been submitted"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "submit took {took:?}");
    assert!(
        dead(&sbatch_pid),
        "the stand-in sbatch outlived its time limit"
    );
    eprintln!("hung sbatch: submit exited 2 after {took:.1?}");

    // status: squeue hangs; exit 2 naming squeue and the limit, no states on stdout.
    let t0 = Instant::now();
    let o = sftctl_env(&sb, &bin, &limit, &["status", spec, "--json"]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(o.stdout.is_empty(), "printed states: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("squeue") && err.contains("did not finish within 3 s and was killed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "status took {took:?}");
    assert!(
        dead(&squeue_pid),
        "the stand-in squeue outlived its time limit"
    );
    eprintln!("hung squeue: status exited 2 after {took:.1?}");

    // A limit that is not a number is refused, naming the variable.
    let o = sftctl_env(
        &sb,
        &bin,
        &[("SFTCTL_SLURM_TIMEOUT_S", "soon")],
        &["status", spec],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("SFTCTL_SLURM_TIMEOUT_S = `soon`"),
        "{}",
        text(&o)
    );

    // With Slurm answering again, the next submit finds the job the killed sbatch submitted
    // (by name) and submits nothing: the point runs once.
    let real = stand_ins(&sb, &[]);
    let o = sftctl_with(&sb, &real, &["submit", spec]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "submitted twice");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("reconciled batch"),
        "{}",
        text(&o)
    );
    let jobs = squeue_jobs("sft.hang.").unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let s = sb.status(spec);
    assert_eq!(s["runs"][0]["job_id"], jobs[0].0.as_str(), "{s:#}");
    sb.ok(&["cancel", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
}

fn controller_up() -> bool {
    Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("is UP"))
}

/// Restarts slurmctld however the test ends.
struct RestoreController;
impl Drop for RestoreController {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/slurm/start.sh"))
            .status();
        let start = Instant::now();
        while !controller_up() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn controller_down_while_status_and_submit_run() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "down.toml";
    sb.write(
        spec,
        &spec_text(
            "down",
            "[env]\nvars = { SFT_STEPS = \"600\", SFT_STEP_S = \"0.2\" }\n[grid]\nseed = [0]\n",
        ),
    );
    sb.ok(&["submit", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "running")).unwrap();
    let _restore = RestoreController;
    let o = Command::new("scontrol")
        .args(["shutdown", "slurmctld"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let start = Instant::now();
    while controller_up() {
        assert!(start.elapsed() < T, "slurmctld did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let start = Instant::now();
    let o = sb.sftctl(&["status", spec, "--json"]);
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        o.stdout.is_empty(),
        "states shown with the controller down: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("squeue") && err.contains("controller"),
        "{err}"
    );
    eprintln!("status with the controller down answered in {took:?}");
    // A new point cannot be half-submitted: the check fails first and the ledger stays as it was.
    // (The running job keeps writing its own records; sftctl's are compared.)
    let sftctl_files = || {
        let mut d = tree_digest(&sb.path().join("ledger"));
        d.retain(|(p, _)| {
            ![
                "heartbeat",
                "metrics",
                "events",
                "attempts",
                "logs",
                "checkpoints",
            ]
            .iter()
            .any(|k| p.contains(k))
        });
        d
    };
    let before = sftctl_files();
    sb.write(
        spec,
        &spec_text(
            "down",
            "[env]\nvars = { SFT_STEPS = \"600\", SFT_STEP_S = \"0.2\" }\n[grid]\nseed = [0, 1]\n",
        ),
    );
    let o = sb.sftctl(&["submit", spec]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Slurm refuses"),
        "{}",
        text(&o)
    );
    assert_eq!(sftctl_files(), before);
    drop(_restore);
    assert!(controller_up());
    // Back up: the job survived, and the new point goes in once.
    let s = sb.status(spec);
    assert_eq!(s["runs"][0]["state"], "running", "{s:#}");
    let out = sb.ok(&["submit", spec]);
    assert_eq!(out.lines().count(), 1, "{out}");
    sb.ok(&["cancel", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
}
