//! End-to-end tests of `sftctl` against the real test cluster (two `slurmd -N` nodes, slurmdbd
//! and MariaDB), one test at a time, mostly as the unprivileged user `sftctl-test`.

use sftctl_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

#[test]
fn sweep_lifecycle_submit_resubmit_fail_retry_extend() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    sb.write("fail-marker", "");
    let spec = "sweep.toml";
    sb.write(
        spec,
        &spec_text(
            "life",
            "array_throttle = 1\n[env]\nvars = { SFT_STEPS = \"2\" }\n[grid]\nseed = [0, 1, 2]\n",
        ),
    );
    // Seed 1 fails on purpose while this marker exists.
    std::fs::create_dir_all(sb.path().join("ledger/sweeps/life")).unwrap();
    std::process::Command::new("chown")
        .args(["-R", TEST_USER])
        .arg(sb.path())
        .status()
        .unwrap();
    sb.write("ledger/sweeps/life/fail-seed-1", "");

    let out = sb.ok(&["submit", spec]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // One array with a `%1` throttle: ids N_0..N_2.
    let array = lines[0].split('_').next().unwrap().to_owned();
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{array}_"))),
        "{out}"
    );
    let batches = std::fs::read_dir(sb.path().join("ledger/sweeps/life/batches")).unwrap();
    let argv: Vec<String> = batches
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(argv[0].contains("--array=0-2%1"), "{argv:?}");

    let s = sb.status(spec);
    assert_eq!(s["runs"].as_array().unwrap().len(), 3);
    assert!(
        s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] != "unsubmitted"),
        "{s:#}"
    );

    let s = sb
        .wait_for(spec, T, |s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["state"] == "completed" || r["state"] == "failed")
        })
        .unwrap();
    assert_eq!(
        states(&s),
        vec![
            ("seed=0".into(), "completed".into()),
            ("seed=1".into(), "failed".into()),
            ("seed=2".into(), "completed".into())
        ]
    );
    let done = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "seed=0")
        .unwrap();
    assert_eq!(done["samples_seen"], 16);
    assert_eq!(done["total_samples"], 16);

    // Resubmitting submits nothing; --retry-failed resubmits only the failed run.
    assert_eq!(sb.ok(&["submit", spec]), "");
    std::fs::remove_file(sb.path().join("ledger/sweeps/life/fail-seed-1")).unwrap();
    let out = sb.ok(&["submit", spec, "--retry-failed"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("seed=1"), "{out}");
    let s = sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();
    let retried = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "seed=1")
        .unwrap();
    assert_eq!(retried["attempt"], 2);

    // The human table, and logs from the run's ledger directory.
    let table = sb.ok(&["status", spec]);
    assert!(
        table.contains("3 completed") && table.contains("16/16"),
        "{table}"
    );
    let logs = sb.ok(&["logs", "seed=0", "--ledger", "ledger"]);
    assert!(logs.contains("fake-train: done"), "{logs}");

    // Adding a seed submits only the new point.
    sb.write(spec, &spec_text("life", "array_throttle = 1\n[env]\nvars = { SFT_STEPS = \"2\" }\n[grid]\nseed = [0, 1, 2, 3]\n"));
    let out = sb.ok(&["submit", spec]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("seed=3"), "{out}");
    sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();
}

#[test]
fn cancel_a_running_sweep() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "c.toml";
    sb.write(
        spec,
        &spec_text(
            "cancel",
            "[env]\nvars = { SFT_STEPS = \"100\", SFT_STEP_S = \"1\" }\n[grid]\nseed = [0, 1, 2]\n",
        ),
    );
    sb.ok(&["submit", spec]);
    // Two one-CPU nodes: two run, the third waits for resources. Slurm fills in the pending
    // job's reason on its next scheduling pass, so wait for that too.
    let s = sb
        .wait_for(spec, T, |s| {
            let runs = s["runs"].as_array().unwrap();
            runs.iter().filter(|r| r["state"] == "running").count() == 2
                && runs
                    .iter()
                    .any(|r| r["state"] == "pending" && r["reason"].is_string())
        })
        .unwrap();
    let pending = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "pending")
        .unwrap();
    assert!(
        pending["reason"].as_str().is_some(),
        "pending without a reason: {s:#}"
    );
    let out = sb.ok(&["cancel", spec]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let s = sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
    let uid = nix::unistd::User::from_name(TEST_USER)
        .unwrap()
        .unwrap()
        .uid;
    let raw = s["runs"][0]["slurm_state"].as_str().unwrap_or("");
    assert!(raw.starts_with("CANCELLED"), "{s:#}");
    if raw.contains(" by ") {
        assert_eq!(raw, format!("CANCELLED by {uid}"));
    }
    assert!(squeue_jobs("sft.cancel.").unwrap().is_empty());
}

#[test]
fn bad_specs_exit_1_and_leave_the_ledger_as_it_was() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    // A ledger with content: a sweep run by the local executor.
    sb.write(
        "good.toml",
        &spec_text(
            "good",
            "[env]\nvars = { SFT_STEPS = \"1\", SFT_STEP_S = \"0\" }\n",
        ),
    );
    sb.ok(&["submit", "good.toml", "--executor", "local", "--wait"]);
    let before = tree_digest(&sb.path().join("ledger"));
    assert!(!before.is_empty());
    let base = spec_text("bad", "");
    let corpus: &[(&str, String, &str)] = &[
        (
            "syntax.toml",
            "[sweep\nname = \"bad\"\n".into(),
            "syntax.toml:1:",
        ),
        (
            "unknown-key.toml",
            base.replace("[slurm]", "[slurm]\npartitoin = \"debug\""),
            "unknown-key.toml:9:1: unknown field `partitoin`",
        ),
        (
            "wrong-type.toml",
            format!("{base}nodes = \"two\"\n"),
            "wrong-type.toml:10:9:",
        ),
        (
            "empty-grid.toml",
            format!("{base}[grid]\nlr = []\n"),
            "empty-grid.toml:11:6: grid axis `lr` is empty",
        ),
        (
            "negative-lr.toml",
            format!("{base}[train]\nlr = -2e-5\n"),
            "negative-lr.toml:11:6: `lr` must be > 0",
        ),
        (
            "no-such-partition.toml",
            format!("{base}partition = \"nosuchpart\"\n"),
            "invalid partition",
        ),
    ];
    for (file, text, needle) in corpus {
        sb.write(file, text);
        let o = sb.sftctl(&["submit", file]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert!(
            err.contains(needle),
            "{file}: stderr lacks `{needle}`:\n{err}"
        );
        assert_eq!(
            tree_digest(&sb.path().join("ledger")),
            before,
            "{file} changed the ledger"
        );
    }
    assert!(squeue_jobs("sft.bad.").unwrap().is_empty());
}

#[test]
fn concurrent_submits_and_a_killed_submit_leave_one_job_per_point() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "race.toml";
    sb.write(
        spec,
        &spec_text(
            "race",
            "[env]\nvars = { SFT_STEPS = \"1\" }\n[grid]\nseed = [0, 1, 2, 3, 4]\n",
        ),
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = barrier.clone();
            let mut cmd = sb.command(&["submit", spec]);
            std::thread::spawn(move || {
                b.wait();
                cmd.output().unwrap()
            })
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.iter().all(|o| o.status.success()), "{outs:?}");
    let printed: usize = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .sum();
    assert_eq!(printed, 5, "{outs:?}");
    let s = sb.status(spec);
    for r in s["runs"].as_array().unwrap() {
        assert_eq!(r["attempt"], 1, "{r}");
    }
    // One sbatch in all: one submitted batch, every run's job a task of it.
    let batches: Vec<serde_json::Value> =
        std::fs::read_dir(sb.path().join("ledger/sweeps/race/batches"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
            .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["state"], "submitted");
    sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();

    // A submit killed between sbatch and the ledger write: a stand-in sbatch runs the real one,
    // prints its id, then kills its caller.
    let bin = sb.path().join("killer-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("sbatch"),
        "#!/bin/bash\nout=$(/usr/bin/sbatch \"$@\") || exit $?\necho \"$out\"\ncase \" $* \" in *--test-only*) exit 0;; esac\nkill -9 $PPID\n",
    )
    .unwrap();
    for c in ["squeue", "sacct", "scancel"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{c}"), bin.join(c)).unwrap();
    }
    std::process::Command::new("chmod")
        .args(["-R", "a+rx"])
        .arg(&bin)
        .status()
        .unwrap();
    let spec2 = "crash.toml";
    sb.write(spec2, &spec_text("crash", "[env]\nvars = { SFT_STEPS = \"20\", SFT_STEP_S = \"0.5\" }\n[grid]\nseed = [0, 1, 2]\n"));
    // runuser -u USER -- env SFTCTL_SLURM_BIN=... sftctl submit: sftctl finds the stand-in.
    let mut cmd = std::process::Command::new("runuser");
    cmd.args([
        "-u",
        TEST_USER,
        "--",
        "env",
        &format!("SFTCTL_SLURM_BIN={}", bin.display()),
    ])
    .arg(sftctl_bin())
    .args(["submit", spec2])
    .current_dir(sb.path());
    let o = cmd.output().unwrap();
    assert!(
        !o.status.success(),
        "the killed submit should not succeed: {o:?}"
    );
    assert_eq!(
        squeue_jobs("sft.crash.").unwrap().len(),
        3,
        "the array reached Slurm"
    );
    // The ledger has an intent and no submission; the next submit reconciles, submits nothing new.
    let out = sb.ok(&["submit", spec2]);
    assert_eq!(out, "", "reconciled runs must not be submitted again");
    let s = sb.status(spec2);
    let jobs: Vec<String> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect();
    let live = squeue_jobs("sft.crash.").unwrap();
    assert_eq!(live.len(), 3);
    for j in &jobs {
        assert!(live.iter().any(|(id, _)| id == j), "{j} not among {live:?}");
    }
    sb.ok(&["cancel", spec2]);
    sb.wait_for(spec2, T, |s| all_in(s, "cancelled")).unwrap();
}

#[test]
fn phased_runs_chain_with_afterok() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "phased.toml";
    sb.write(
        spec,
        &spec_text("phased", "[env]\nvars = { SFT_STEPS = \"2\", SFT_STEP_S = \"1\" }\n[train]\nstrategy = \"phased\"\n[[data]]\nname = \"general\"\npath = \"a.jsonl\"\nphase = 1\n[[data]]\nname = \"domain\"\npath = \"b.jsonl\"\nphase = 2\n"),
    );
    let out = sb.ok(&["submit", spec]);
    let ids: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{out}");
    let batches: Vec<String> = std::fs::read_dir(sb.path().join("ledger/sweeps/phased/batches"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        batches
            .iter()
            .any(|b| b.contains(&format!("--dependency=afterok:{}", ids[0]))),
        "{batches:?}"
    );
    let dep = std::process::Command::new("squeue")
        .args(["-h", "-j", ids[1], "-o", "%r"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&dep.stdout).trim(), "Dependency");
    let s = sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();
    assert_eq!(s["runs"][0]["phase"], 2);
}

#[test]
fn accounting_off_status_comes_from_the_ledger() {
    let Some(_lock) = lock_cluster() else { return };
    let mut sb = Sandbox::new(true);
    // The same controller, seen through a configuration without accounting storage.
    sb.env
        .push(("SLURM_CONF".into(), "/etc/slurm-noacct/slurm.conf".into()));
    let spec = "noacct.toml";
    sb.write(
        spec,
        &spec_text(
            "noacct",
            "[env]\nvars = { SFT_STEPS = \"1\" }\n[grid]\nseed = [0, 7]\n",
        ),
    );
    std::fs::create_dir_all(sb.path().join("ledger/sweeps/noacct")).unwrap();
    sb.write("ledger/sweeps/noacct/fail-seed-7", "");
    let out = sb.ok(&["submit", spec]);
    assert_eq!(out.lines().count(), 2);
    // Wait until squeue has forgotten both jobs (MinJobAge is 5 s in the test cluster).
    let s = sb
        .wait_for(spec, T, |s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["slurm_state"].is_null())
                && s["accounting"] == "disabled"
        })
        .unwrap();
    assert_eq!(
        states(&s),
        vec![
            ("seed=0".into(), "completed".into()),
            ("seed=7".into(), "failed".into())
        ]
    );
}

#[test]
fn local_executor_runs_the_same_ledger() {
    let sb = Sandbox::new(false);
    let spec = "local.toml";
    sb.write(
        spec,
        &spec_text(
            "local",
            "[env]\nvars = { SFT_STEPS = \"2\", SFT_STEP_S = \"0.1\" }\n[grid]\nseed = [0, 1]\n",
        ),
    );
    sb.ok(&["submit", spec, "--executor", "local", "--wait"]);
    let s = sb.status(spec);
    assert!(all_in(&s, "completed"), "{s:#}");
    assert_eq!(sb.ok(&["submit", spec, "--executor", "local"]), "");
    // Detached: submit returns at once, the worker finishes in the background.
    sb.write(
        spec,
        &spec_text(
            "local",
            "[env]\nvars = { SFT_STEPS = \"2\", SFT_STEP_S = \"0.1\" }\n[grid]\nseed = [0, 1, 2]\n",
        ),
    );
    let out = sb.ok(&["submit", spec, "--executor", "local"]);
    assert_eq!(out.lines().count(), 1);
    sb.wait_for(spec, Duration::from_secs(60), |s| all_in(s, "completed"))
        .unwrap();
}

#[test]
fn stale_heartbeat_shows_stalled_and_usr1_reaches_the_command() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "stall.toml";
    let text = spec_text(
        "stall",
        "[env]\nvars = { SFT_STEPS = \"3\", SFT_STEP_S = \"40\" }\n",
    )
    .replace("[run]\n", "[run]\nstale_after_s = 3\n");
    sb.write(spec, &text);
    let out = sb.ok(&["submit", spec]);
    let job = out.split('\t').next().unwrap().to_owned();
    sb.wait_for(spec, T, |s| s["runs"][0]["state"] == "stalled")
        .unwrap();
    // What `--signal=B:USR1@<s>` does near the time limit, now: the batch shell forwards it.
    let st = std::process::Command::new("scancel")
        .args(["--signal=USR1", "--batch", &job])
        .status()
        .unwrap();
    assert!(st.success());
    let run_id = sb.status(spec)["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = sb.path().join(format!(
        "ledger/sweeps/stall/runs/{run_id}/events/rank-0.jsonl"
    ));
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&events)
        .unwrap_or_default()
        .contains("\"preempted\"")
    {
        assert!(
            start.elapsed() < T,
            "no preempted event in {}",
            events.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    sb.ok(&["cancel", spec]);
    sb.wait_for(spec, T, |s| all_in(s, "cancelled")).unwrap();
}

#[test]
fn two_node_job_launches_one_task_per_node() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "multi.toml";
    sb.write(
        spec,
        &spec_text("multi", "nodes = 2\n[env]\nvars = { SFT_STEPS = \"1\" }\n"),
    );
    sb.ok(&["submit", spec]);
    let s = sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();
    let run_id = s["runs"][0]["run_id"].as_str().unwrap();
    let run = sb.path().join(format!("ledger/sweeps/multi/runs/{run_id}"));
    assert!(
        run.join("heartbeat/rank-1.json").is_file(),
        "rank 1 did not run"
    );
    let script = std::fs::read_to_string(run.join("job.sh")).unwrap();
    assert!(
        script.contains("#SBATCH --nodes=2")
            && script.contains("mpirun --tag-output --bind-to none -np 2"),
        "{script}"
    );
}

#[test]
fn a_submission_refused_part_way_leaves_no_orphan_and_resumes() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    // A stand-in sbatch that lets test-only calls and two submissions through, then refuses
    // the way a QOS limit does.
    let bin = sb.path().join("qos-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let count = sb.path().join("qos-bin/count");
    std::fs::write(
        bin.join("sbatch"),
        format!(
            "#!/bin/bash\ncase \" $* \" in *--test-only*) exec /usr/bin/sbatch \"$@\";; esac\n\
             n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}\n\
             if [ $n -ge 3 ]; then echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2; exit 1; fi\n\
             exec /usr/bin/sbatch \"$@\"\n",
            c = count.display()
        ),
    )
    .unwrap();
    for c in ["squeue", "sacct", "scancel"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{c}"), bin.join(c)).unwrap();
    }
    std::process::Command::new("chown")
        .args(["-R", TEST_USER])
        .arg(&bin)
        .status()
        .unwrap();
    std::process::Command::new("chmod")
        .args(["-R", "a+rx"])
        .arg(&bin)
        .status()
        .unwrap();
    let spec = "qos.toml";
    sb.write(
        spec,
        &spec_text(
            "qos",
            "array = false\n[env]\nvars = { SFT_STEPS = \"1\" }\n[grid]\nseed = [0, 1, 2, 3]\n",
        ),
    );
    let o = std::process::Command::new("runuser")
        .args([
            "-u",
            TEST_USER,
            "--",
            "env",
            &format!("SFTCTL_SLURM_BIN={}", bin.display()),
        ])
        .arg(sftctl_bin())
        .args(["submit", spec])
        .current_dir(sb.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("QOSMaxSubmitJobPerUserLimit") && err.contains("2 run(s) submitted before it"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let s = sb.status(spec);
    let submitted = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["attempt"] == 1)
        .count();
    assert_eq!(submitted, 2, "{s:#}");
    // The next submit (QOS freed) sends only the two that were refused.
    let out = sb.ok(&["submit", spec]);
    assert_eq!(out.lines().count(), 2, "{out}");
    sb.wait_for(spec, T, |s| all_in(s, "completed")).unwrap();
    let s = sb.status(spec);
    assert!(
        s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["attempt"] == 1),
        "{s:#}"
    );
}
