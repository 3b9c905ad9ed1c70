//! End-to-end tests of the evaluations a spec asks for (`[[eval]]`), through the real `sftctl`
//! and `sftctl-train`: evaluation jobs on the test cluster that wait for training (`afterok`),
//! score every checkpoint (built-in MMLU scorer) or the final one (a command standing in for
//! lm-evaluation-harness), land in the ledger and in `sftctl report`; a failed evaluation job
//! shown and retried; checkpoint weights kept until scored, then dropped. The same through the
//! local executor. And `sftctl prune --yes` cancelling real running Slurm jobs.

use sftctl_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(600);

/// A sandbox with a copy of `examples/` whose quickstart is shrunk to one grid point of 4 steps,
/// checkpointing every 2 with `--keep-last 1`, plus two evaluations: `mmlu` (built-in, every
/// checkpoint) and `fake_lm` (tests/payload/fake-lm-eval.sh, the final checkpoint).
fn sweep_with_evals(name: &str, executor: &str) -> (Sandbox, String) {
    let edits = [
        ("executor = \"local\"", format!("executor = \"{executor}\"")),
        (
            "max_steps = 0",
            "max_steps = 4\ncheckpoint_every = 2".to_owned(),
        ),
        (
            "[run]\n",
            "[run]\ncommand = [\"{binary}\", \"run\", \"{run_dir}\", \"--keep-last\", \"1\"]\n"
                .to_owned(),
        ),
    ];
    // Slurm jobs run as the unprivileged test user; local ones as whoever runs the test.
    let (sb, spec) = quickstart_sweep(name, executor == "slurm", &edits, "");
    fs_err::copy(
        repo().join("tests/payload/fake-lm-eval.sh"),
        sb.path().join("fake-lm-eval.sh"),
    )
    .unwrap();
    let mut text = fs_err::read_to_string(sb.path().join(&spec)).unwrap();
    text.push_str(&format!(
        "\n[[eval]]\nname = \"mmlu\"\nkind = \"mmlu\"\ndata = \"eval/mmlu-tiny\"\ncheckpoints = \"all\"\nshots = 1\n\n\
         [[eval]]\nname = \"fake_lm\"\nkind = \"command\"\ncommand = [\"{}\", \"{{model}}\", \"{{output}}\"]\n[eval.slurm]\ntime = \"5\"\n",
        sb.path().join("fake-lm-eval.sh").display()
    ));
    sb.write(&spec, &text);
    (sb, spec)
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs_err::read(p).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

/// The evaluation entry `name` of the only run of a status document.
fn eval_of<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{s:#}");
    runs[0]["evals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no evaluation `{name}` in {s:#}"))
}

fn scontrol(args: &[&str]) {
    let o = Command::new("scontrol").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "scontrol {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What both executors must leave: scores of both checkpoints from the built-in scorer, the
/// command's lm-eval JSON imported at the final one, step 2's weights gone once scored, the
/// final checkpoint whole, and a report with both benchmarks.
fn check_scored(sb: &Sandbox, spec: &str, name: &str) -> PathBuf {
    let dir = only_run_dir(sb, name);
    for step in [2, 4] {
        let r = json(&dir.join(format!("eval/mmlu.step-{step}.json")));
        let acc = r["metrics"]["acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r}");
        assert!(
            dir.join(format!("eval/scored/mmlu.step-{step}.json"))
                .is_file()
        );
    }
    let g = json(&dir.join("eval/fake_group.step-4.json"));
    assert!(g["metrics"]["acc"].as_f64().is_some(), "{g}");
    assert_eq!(g["metrics"]["acc_stderr"], 0.01);
    // A subtask of an lm-eval group is not imported (as `sftctl import` without --all-tasks).
    assert!(!dir.join("eval/fake_sub.step-4.json").exists());
    let scored = json(&dir.join("eval/scored/fake_lm.step-4.json"));
    assert_eq!(scored["results"], serde_json::json!(["fake_group"]));
    assert!(!dir.join("eval/fake_group.step-2.json").exists());
    // Scored by every evaluation that wanted it and beyond `--keep-last 1`: gone.
    assert!(
        !dir.join("checkpoints/step-2").exists(),
        "{}",
        job_logs(&dir)
    );
    for f in ["model.safetensors", "optimizer.bpk", "COMPLETE"] {
        assert!(dir.join("checkpoints/step-4").join(f).is_file(), "{f}");
    }
    let report = sb.ok(&["report", spec, "--rows", "lr", "--format", "csv"]);
    let header = report.lines().next().unwrap_or_default();
    assert!(
        header.contains("mmlu:acc") && header.contains("fake_group:acc"),
        "{report}"
    );
    dir
}

#[test]
fn eval_jobs_run_after_training_on_slurm_keep_weights_until_scored_and_retry() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, spec) = sweep_with_evals("evals", "slurm");
    sb.write("fail-lm-eval", "");
    let out = sb.ok(&["submit", &spec]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let train_job = lines[0].split('\t').next().unwrap().to_owned();
    let job_of = |eval: &str| {
        lines
            .iter()
            .find(|l| l.ends_with(&format!("\teval:{eval}")))
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no eval:{eval} in {out}"))
    };
    let mmlu_job = job_of("mmlu");
    let lm_job = job_of("fake_lm");
    // Hold the built-in evaluation so the test sees the trained run before it is scored.
    scontrol(&["hold", &mmlu_job]);
    let dir = only_run_dir(&sb, "evals");
    let batches = sb.path().join("ledger-data/sweeps/evals/batches");
    let argv: Vec<String> = fs_err::read_dir(&batches)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| fs_err::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(
        argv.iter()
            .filter(|b| b.contains(&format!("--dependency=afterok:{train_job}")))
            .count(),
        2,
        "{argv:?}"
    );

    // Training completes; the command evaluation fails on purpose; the held one waits.
    let s = sb
        .wait_for(&spec, T, |s| {
            let r = &s["runs"][0];
            r["state"] == "completed"
                && r["evals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["name"] == "fake_lm" && e["state"] == "failed")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", job_logs(&dir)));
    assert_eq!(eval_of(&s, "mmlu")["state"], "pending", "{s:#}");
    assert_eq!(eval_of(&s, "fake_lm")["job_id"], lm_job.as_str());
    // Not scored yet: step 2 (beyond `--keep-last 1`) keeps its weights, not its optimizer.
    let step2 = dir.join("checkpoints/step-2");
    assert!(
        step2.join("model.safetensors").is_file(),
        "{}",
        job_logs(&dir)
    );
    assert!(step2.join("COMPLETE").is_file());
    assert!(!step2.join("optimizer.bpk").exists());
    let table = sb.ok(&["status", &spec]);
    assert!(
        table.contains("EVALS")
            && table.contains("1 failed,1 pending")
            && table.contains(&format!("evaluation `fake_lm` failed (job {lm_job})")),
        "{table}"
    );

    scontrol(&["release", &mmlu_job]);
    let s = sb
        .wait_for(&spec, T, |s| eval_of(s, "mmlu")["state"] == "done")
        .unwrap_or_else(|e| panic!("{e}\n{}", job_logs(&dir)));
    assert_eq!(
        eval_of(&s, "mmlu")["scored_steps"],
        serde_json::json!([2, 4])
    );
    // The failed command evaluation still needs only the final checkpoint, so step 2 went.
    assert!(!step2.exists(), "{}", job_logs(&dir));

    // Without --retry-failed nothing is submitted; with it only the failed evaluation job.
    assert_eq!(sb.ok(&["submit", &spec]), "");
    fs_err::remove_file(sb.path().join("fail-lm-eval")).unwrap();
    let out = sb.ok(&["submit", &spec, "--retry-failed"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.trim_end().ends_with("\teval:fake_lm"), "{out}");
    let s = sb
        .wait_for(&spec, T, |s| eval_of(s, "fake_lm")["state"] == "done")
        .unwrap_or_else(|e| panic!("{e}\n{}", job_logs(&dir)));
    assert_eq!(eval_of(&s, "fake_lm")["attempt"], 2);
    assert_eq!(s["runs"][0]["attempt"], 1, "training was not resubmitted");
    check_scored(&sb, &spec, "evals");
    let subs = fs_err::read_to_string(dir.join("eval-submissions.jsonl")).unwrap();
    assert_eq!(subs.lines().count(), 3, "{subs}");
}

#[test]
fn eval_jobs_run_after_training_with_the_local_executor() {
    let (sb, spec) = sweep_with_evals("evals-local", "local");
    let out = sb.ok(&["submit", &spec, "--wait"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let s = sb.status(&spec);
    assert_eq!(s["runs"][0]["state"], "completed", "{s:#}");
    for e in ["mmlu", "fake_lm"] {
        assert_eq!(eval_of(&s, e)["state"], "done", "{s:#}");
    }
    check_scored(&sb, &spec, "evals-local");
    assert_eq!(sb.ok(&["submit", &spec]), "");
}

#[test]
fn prune_yes_cancels_the_predicted_worst_running_slurm_jobs() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "p.toml";
    sb.write(
        spec,
        &spec_text(
            "prune",
            "[env]\nvars = { SFT_STEPS = \"100\", SFT_STEP_S = \"1\" }\n[grid]\nseed = [0, 1]\n",
        ),
    );
    sb.ok(&["submit", spec]);
    // Two one-CPU nodes: both points run; each has seen 16 samples after two steps.
    let s = sb
        .wait_for(spec, Duration::from_secs(120), |s| {
            s["runs"].as_array().unwrap().iter().all(|r| {
                r["state"] == "running" && r["samples_seen"].as_u64().is_some_and(|n| n >= 16)
            })
        })
        .unwrap();
    let jobs: Vec<String> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect();
    let dry = sb.ok(&["prune", spec, "--after", "16", "--keep", "1", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["dry_run"], true);
    let doomed = dry["cancel"].as_array().unwrap().clone();
    assert_eq!(doomed.len(), 1, "{dry:#}");
    let out = sb.ok(&["prune", spec, "--after", "16", "--keep", "1", "--yes"]);
    let s = sb
        .wait_for(spec, Duration::from_secs(60), |s| {
            s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["state"] == "cancelled")
        })
        .unwrap();
    for r in s["runs"].as_array().unwrap() {
        let cancelled = doomed.contains(&r["run_id"]);
        let want = if cancelled { "cancelled" } else { "running" };
        assert_eq!(r["state"], want, "{s:#}\n{out}");
        if cancelled {
            assert!(out.contains(r["job_id"].as_str().unwrap()), "{out}");
        }
    }
    // Slurm itself says so (its accounting catches up within seconds).
    let doomed_job = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "cancelled")
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .unwrap();
    let mut text = String::new();
    for _ in 0..60 {
        let sacct = Command::new("sacct")
            .args(["-n", "-X", "-P", "-o", "JobID,State", "-j", &jobs.join(",")])
            .output()
            .unwrap();
        text = String::from_utf8_lossy(&sacct.stdout).into_owned();
        if text
            .lines()
            .any(|l| l.starts_with(&format!("{doomed_job}|CANCELLED")))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{doomed_job}|CANCELLED"))),
        "sacct for {jobs:?}:\n{text}"
    );
    sb.ok(&["cancel", spec]);
}

/// A Slurm client directory whose `sbatch` holds the first submission (`--hold`), refuses the
/// second like a QOS limit, and passes the rest (and every `--test-only`) to the real one.
fn stepping_sbatch(sb: &Sandbox) -> PathBuf {
    let bin = sb.path().join("step-bin");
    fs_err::create_dir_all(&bin).unwrap();
    let count = bin.join("count");
    fs_err::write(
        bin.join("sbatch"),
        format!(
            "#!/bin/bash\ncase \" $* \" in *--test-only*) exec /usr/bin/sbatch \"$@\";; esac\n\
             n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}\n\
             if [ $n = 1 ]; then exec /usr/bin/sbatch --hold \"$@\"; fi\n\
             if [ $n = 2 ]; then echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2; exit 1; fi\n\
             exec /usr/bin/sbatch \"$@\"\n",
            c = count.display()
        ),
    )
    .unwrap();
    for c in ["squeue", "sacct", "scancel"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{c}"), bin.join(c)).unwrap();
    }
    for (cmd, args) in [("chown", ["-R", TEST_USER]), ("chmod", ["-R", "a+rwx"])] {
        let st = Command::new(cmd).args(args).arg(&bin).status().unwrap();
        assert!(st.success());
    }
    bin
}

#[test]
fn a_refused_eval_sbatch_is_completed_by_the_next_submit_and_cancel_reaches_eval_jobs() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, spec) = sweep_with_evals("evals-refused", "slurm");
    let bin = stepping_sbatch(&sb);
    let submit = |extra: &[&str]| {
        Command::new("runuser")
            .args(["-u", TEST_USER, "--", "env"])
            .arg(format!("SFTCTL_SLURM_BIN={}", bin.display()))
            .arg(sftctl_bin())
            .args(["submit", &spec])
            .args(extra)
            .current_dir(sb.path())
            .output()
            .unwrap()
    };
    // Training goes in (held), the first evaluation's sbatch is refused, the second not tried.
    let o = submit(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("QOSMaxSubmitJobPerUserLimit"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    let train_job = out.split('\t').next().unwrap().to_owned();
    let s = sb.status(&spec);
    assert_eq!(s["runs"][0]["state"], "pending", "{s:#}");
    for e in ["mmlu", "fake_lm"] {
        assert_eq!(eval_of(&s, e)["state"], "unsubmitted", "{s:#}");
    }

    // The next submit sends only the two evaluation jobs, after the (still held) training job.
    let o = submit(&[]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.contains("\teval:")), "{out}");
    let dir = only_run_dir(&sb, "evals-refused");
    let subs = fs_err::read_to_string(dir.join("eval-submissions.jsonl")).unwrap();
    assert_eq!(
        subs.matches(&format!("\"depends_on\":\"{train_job}\""))
            .count(),
        2,
        "{subs}"
    );
    let s = sb.status(&spec);
    for e in ["mmlu", "fake_lm"] {
        assert_eq!(eval_of(&s, e)["state"], "pending", "{s:#}");
    }

    // `cancel` reaches the evaluation jobs too.
    let cancelled = sb.ok(&["cancel", &spec]);
    assert_eq!(cancelled.lines().count(), 3, "{cancelled}");
    let s = sb
        .wait_for(&spec, Duration::from_secs(60), |s| {
            s["runs"][0]["state"] == "cancelled"
                && ["mmlu", "fake_lm"]
                    .iter()
                    .all(|e| eval_of(s, e)["state"] == "cancelled")
        })
        .unwrap();
    let table = sb.ok(&["status", &spec]);
    assert!(table.contains("2 cancelled"), "{table}\n{s:#}");

    // --retry-failed resubmits training and, after it, both evaluations; all finish.
    let o = submit(&["--retry-failed"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.lines().count(), 3, "{out}");
    let s = sb
        .wait_for(&spec, T, |s| {
            s["runs"][0]["state"] == "completed"
                && ["mmlu", "fake_lm"]
                    .iter()
                    .all(|e| eval_of(s, e)["state"] == "done")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", job_logs(&dir)));
    assert_eq!(s["runs"][0]["attempt"], 2);
    for e in ["mmlu", "fake_lm"] {
        assert_eq!(eval_of(&s, e)["attempt"], 2, "{s:#}");
    }
    check_scored(&sb, &spec, "evals-refused");
}

#[test]
fn evaluation_arrays_wait_for_the_last_phase_task_by_task() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    let spec = "phased.toml";
    sb.write(
        spec,
        &spec_text(
            "phased-evals",
            "[env]\nvars = { SFT_STEPS = \"30\", SFT_STEP_S = \"1\" }\n[train]\nstrategy = \"phased\"\n[grid]\nseed = [0, 1]\n\
             [[data]]\nname = \"general\"\npath = \"a.jsonl\"\nphase = 1\n[[data]]\nname = \"domain\"\npath = \"b.jsonl\"\nphase = 2\n\
             [[eval]]\nname = \"lm\"\nkind = \"command\"\ncommand = [\"true\", \"{model}\", \"{output}\"]\n",
        ),
    );
    let out = sb.ok(&["submit", spec]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let array = |l: &str| l.split('_').next().unwrap().to_owned();
    let (phase1, phase2, eval) = (array(lines[0]), array(lines[2]), array(lines[4]));
    assert!(
        lines[4].ends_with("\teval:lm") && lines[5].ends_with("\teval:lm"),
        "{out}"
    );
    let batches: Vec<String> =
        fs_err::read_dir(sb.path().join("ledger/sweeps/phased-evals/batches"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| fs_err::read_to_string(e.path()).unwrap())
            .collect();
    for (job, after) in [(&phase2, &phase1), (&eval, &phase2)] {
        assert!(
            batches.iter().any(|b| b.contains(&format!("\"{job}\""))
                && b.contains(&format!("--dependency=aftercorr:{after}"))),
            "{job} after {after}: {batches:?}"
        );
    }
    // Slurm fills in the reason on its next scheduling pass.
    let mut reason = String::new();
    for _ in 0..40 {
        let o = Command::new("squeue")
            .args(["-h", "-r", "-j", &format!("{eval}_0"), "-o", "%r"])
            .output()
            .unwrap();
        reason = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        if reason == "Dependency" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(reason, "Dependency");
    let s = sb.status(spec);
    for r in s["runs"].as_array().unwrap() {
        assert_eq!(r["evals"][0]["state"], "pending", "{s:#}");
        assert!(
            r["evals"][0]["job_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{eval}_"))
        );
    }
    let cancelled = sb.ok(&["cancel", spec]);
    // Both phases of both runs, and both evaluation tasks.
    assert_eq!(cancelled.lines().count(), 6, "{cancelled}");
    sb.wait_for(spec, Duration::from_secs(60), |s| {
        s["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "cancelled" && r["evals"][0]["state"] == "cancelled")
    })
    .unwrap();
}

#[test]
fn a_built_in_evaluation_runs_inside_the_training_job() {
    let (sb, spec) = sweep_with_evals("evals-inside", "local");
    let text = fs_err::read_to_string(sb.path().join(&spec)).unwrap();
    let text = text.replacen("shots = 1\n", "shots = 1\nwhere = \"training-job\"\n", 1);
    sb.write(&spec, &text);
    let out = sb.ok(&["submit", &spec, "--wait"]);
    // Training and the command evaluation's job; the built-in one has no job of its own.
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains("eval:mmlu"), "{out}");
    let s = sb.status(&spec);
    assert_eq!(s["runs"][0]["evals"].as_array().unwrap().len(), 1, "{s:#}");
    let dir = check_scored(&sb, &spec, "evals-inside");
    let train_log = fs_err::read_dir(dir.join("logs"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with("eval-"))
        .map(|e| fs_err::read_to_string(e.path()).unwrap())
        .unwrap();
    assert!(train_log.contains("mmlu step 4: acc"), "{train_log}");
}

/// lm-evaluation-harness itself as a `kind = "command"` evaluation job (examples/eval/lm-eval.sh,
/// offline, one local task per subject of examples/eval/mmlu-tiny) beside the built-in scorer,
/// through the local executor: its per-subject accuracies are imported into the ledger and
/// equal the built-in scorer's at every checkpoint. Needs lm_eval in the venv
/// (tests/python-env.sh installs it); skipped without it unless `SFTCTL_REQUIRE_PYTHON` is set.
#[test]
fn lm_eval_itself_runs_as_an_evaluation_job_and_agrees_with_the_built_in_scorer() {
    let venv = std::env::var("SFTCTL_VENV").unwrap_or_else(|_| "/opt/sftctl-venv".into());
    if !Path::new(&venv).join("bin/lm_eval").is_file() {
        assert!(
            std::env::var_os("SFTCTL_REQUIRE_PYTHON").is_none(),
            "SFTCTL_REQUIRE_PYTHON is set but {venv} has no lm_eval (run tests/python-env.sh)"
        );
        eprintln!("skipped: no lm_eval in {venv} (tests/python-env.sh installs it)");
        return;
    }
    let edits = [(
        "max_steps = 0",
        "max_steps = 4\ncheckpoint_every = 2".to_owned(),
    )];
    let extra = format!(
        "venv = \"{venv}\"\n\n\
         [[eval]]\nname = \"builtin\"\nkind = \"mmlu\"\ndata = \"eval/mmlu-tiny\"\ncheckpoints = \"all\"\n\n\
         [[eval]]\nname = \"lm_eval\"\nkind = \"command\"\ncommand = [\"eval/lm-eval.sh\", \"{{model}}\", \"{{output}}\"]\ncheckpoints = \"all\"\nall_tasks = true\n"
    );
    let (sb, spec) = quickstart_sweep("lm-eval", false, &edits, &extra);
    sb.ok(&["submit", &spec, "--executor", "local", "--wait"]);
    let dir = only_run_dir(&sb, "lm-eval");
    let s = sb.status(&spec);
    assert_eq!(
        s["runs"][0]["state"],
        "completed",
        "{s:#}\n{}",
        job_logs(&dir)
    );
    let mut compared = 0;
    for step in [2, 4] {
        let builtin = json(&dir.join(format!("eval/builtin.step-{step}.json")));
        let subjects: Vec<String> = builtin["metrics"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| k.strip_prefix("acc/").map(str::to_owned))
            .collect();
        assert_eq!(subjects.len(), 3, "{builtin:#}");
        for subject in subjects {
            let lm = json(&dir.join(format!("eval/tiny_{subject}.step-{step}.json")));
            assert_eq!(
                lm["metrics"]["acc"],
                builtin["metrics"][format!("acc/{subject}")],
                "step {step}, {subject}: lm-eval {lm:#} vs built-in {builtin:#}\n{}",
                job_logs(&dir)
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 6);
}
