//! `sftctl report`, `import` and `prune --dry-run` driven as a user would, on a synthetic ledger
//! written through `sftctl-ledger`: 2 batch sizes × 2 learning rates × 3 seeds, where one point
//! was never submitted, one failed, three are still running, and two have imported scores. Outputs
//! are compared with golden files (`UPDATE_GOLDEN=1` rewrites them).

use sftctl_ledger::io::append_jsonl;
use sftctl_ledger::results::write_eval_at;
use sftctl_ledger::{
    EvalResult, Executor, Ledger, MetricRecord, Resources, ResultStatus, RunRecord, RunResult,
    RunWriter, Submission, SweepRecord, Timestamp,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const T0: &str = "2026-01-01T00:00:00Z";

fn t0() -> Timestamp {
    serde_json::from_value(serde_json::json!(T0)).unwrap()
}

/// How a synthetic run ends.
#[derive(Clone, Copy, PartialEq)]
enum End {
    Done,
    Failed,
    Running,
    Missing,
}

struct Point {
    id: String,
    bs: u64,
    lr: f64,
    seed: u64,
    end: End,
}

fn points() -> Vec<Point> {
    let mut v = Vec::new();
    for (bi, bs) in [8u64, 64].into_iter().enumerate() {
        for (li, lr) in [1e-5, 2e-5].into_iter().enumerate() {
            for seed in 0..3u64 {
                let end = match (bs, li, seed) {
                    (8, 0, 2) => End::Missing,
                    (64, 1, 2) => End::Failed,
                    (64, 0, 1) | (8, 1, 2) | (64, 1, 1) => End::Running,
                    _ => End::Done,
                };
                v.push(Point {
                    id: format!("r{bi}{li}{seed}"),
                    bs,
                    lr,
                    seed,
                    end,
                });
            }
        }
    }
    v
}

/// Writes what `sftctl submit` leaves for run `id` named `name` of `sweep` (run record,
/// `config.json` with these `[train]` values, one local submission); returns its directory.
fn submitted_run(
    sweep: &sftctl_ledger::SweepDir,
    id: &str,
    name: &str,
    train: serde_json::Value,
) -> sftctl_ledger::RunDir {
    let dir = sweep.run(id);
    dir.write_run(&RunRecord {
        format_version: 1,
        run_id: id.into(),
        name: name.into(),
        sweep: sweep.name().into(),
        identity: serde_json::json!({}),
        resources: Resources {
            nodes: 1,
            gpus_per_node: 1,
            cpus_per_task: 1,
            time_limit_s: 60,
        },
        phases: vec![],
        created_at: t0(),
        sftctl_version: "0".into(),
    })
    .unwrap();
    dir.write_config(&serde_json::json!({
        "run_id": id, "name": name, "sweep": sweep.name(), "train": train,
    }))
    .unwrap();
    dir.append_submission(&Submission {
        job_id: format!("local-{id}"),
        batch: "b".into(),
        phase: 0,
        attempt: 1,
        executor: Executor::Local,
        submitted_at: t0(),
        depends_on: None,
    })
    .unwrap();
    dir
}

/// Writes the ledger; every value is a fixed function of the point, so outputs are stable.
fn write_ledger(root: &Path) {
    let l = Ledger::create(root, "test").unwrap();
    let sweep = l.sweep("demo");
    let pts = points();
    sweep
        .write_sweep(&SweepRecord {
            format_version: 1,
            name: "demo".into(),
            created_at: t0(),
            updated_at: t0(),
            spec_sha256: "0".into(),
            executor: Executor::Local,
            runtimes: vec![],
            runs: pts.iter().map(|p| p.id.clone()).collect(),
        })
        .unwrap();
    for p in &pts {
        if p.end == End::Missing {
            continue;
        }
        let name = format!("demo-bs{}-lr{:e}-s{}", p.bs, p.lr, p.seed);
        let dir = submitted_run(
            &sweep,
            &p.id,
            &name,
            serde_json::json!({"batch_size": p.bs, "lr": p.lr, "seed": p.seed, "schedule": "cosine"}),
        );
        let mut w = RunWriter::open(dir.path(), 0, None).unwrap();
        // 6,400 samples in all; a running run has seen 1,280.
        let total = if p.end == End::Running { 1280 } else { 6400 };
        let steps = total / p.bs;
        let lr_f = p.lr / 1e-5;
        let bs_f = (p.bs as f64 / 8.0).sqrt();
        for step in 1..=steps {
            let s = (step * p.bs) as f64;
            w.metric(&MetricRecord {
                step,
                epoch: s / 6400.0,
                samples_seen: step * p.bs,
                tokens: step * p.bs * 100,
                loss_tokens: step * p.bs * 40,
                loss: 2.0 * lr_f * (1.0 + 3200.0 / (s + 400.0)) + 0.01 * p.seed as f64,
                grad_norm: bs_f / lr_f * (0.5 + 800.0 / (s + 800.0)) + 0.02 * p.seed as f64,
                lr: p.lr,
                step_time_s: 0.1,
                tokens_per_s: 1000.0,
                mem_bytes: None,
                at: t0(),
            })
            .unwrap();
        }
        // Evaluations at four checkpoints (the running run has reached one).
        for k in 1..=4u64 {
            let samples = k * 1600;
            if samples > total && p.end == End::Running || p.end == End::Failed && k > 2 {
                break;
            }
            let step = samples / p.bs;
            // The peak comes at checkpoint 2 for the large batch, 3 for the small one.
            let peak_k = if p.bs == 8 { 3.0 } else { 2.0 };
            let acc = 0.40 + 0.05 * lr_f - 0.01 * bs_f - 0.02 * (k as f64 - peak_k).powi(2)
                + 0.004 * p.seed as f64;
            write_eval_at(
                dir.path(),
                &EvalResult {
                    name: "mmlu".into(),
                    step,
                    metrics: BTreeMap::from([
                        ("acc".into(), acc),
                        ("acc_subject_mean".into(), acc - 0.01),
                        ("acc/anatomy".into(), acc + 0.03),
                    ]),
                    at: t0(),
                },
            )
            .unwrap();
            let vl = 1.2 + 0.03 * (k as f64 - peak_k - 1.0).powi(2) + 0.001 * p.seed as f64;
            append_jsonl(
                &dir.validation(),
                &serde_json::json!({"step": step, "loss": vl, "loss_tokens": 100, "at": T0}),
                false,
            )
            .unwrap();
        }
        match p.end {
            End::Done | End::Failed => {
                w.write_result(&RunResult {
                    status: if p.end == End::Done {
                        ResultStatus::Completed
                    } else {
                        ResultStatus::Failed
                    },
                    job_id: format!("local-{}", p.id),
                    final_step: steps,
                    samples_seen: total,
                    tokens: 0,
                    final_loss: None,
                    wall_s: 1.0,
                    at: t0(),
                    message: (p.end == End::Failed)
                        .then(|| "CUDA out of memory on rank 0".to_string()),
                })
                .unwrap();
            }
            End::Running | End::Missing => {}
        }
    }
}

fn sftctl(ledger: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_sftctl"))
        .args(args)
        .arg("--ledger")
        .arg(ledger)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let filter =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&ledger.display().to_string(), "[LEDGER]");
    (
        filter(&out.stdout),
        filter(&out.stderr),
        out.status.code().unwrap_or(-1),
    )
}

fn golden(name: &str, actual: &str) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs_err::write(&p, actual).unwrap();
        return;
    }
    let want = fs_err::read_to_string(&p).unwrap_or_default();
    assert!(
        want == actual,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)\n--- want\n{want}\n--- got\n{actual}"
    );
}

#[test]
fn report_in_every_format_matches_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let base = [
        "report",
        "demo",
        "--rows",
        "batch_size,lr",
        "--metrics",
        "mmlu:acc,mmlu:acc_subject_mean",
    ];
    for (fmt, ext) in [
        ("terminal", "txt"),
        ("markdown", "md"),
        ("latex", "tex"),
        ("csv", "csv"),
        ("json", "json"),
    ] {
        let mut args = base.to_vec();
        args.extend(["--format", fmt]);
        let (out, err, code) = sftctl(&root, &args);
        assert_eq!(code, 0, "{err}");
        golden(&format!("report.{ext}"), &out);
        if fmt == "terminal" {
            golden("report.stderr.txt", &err);
        }
    }
    for ck in ["peak", "best-val-loss"] {
        let mut args = base.to_vec();
        args.extend(["--checkpoint", ck]);
        let (out, err, code) = sftctl(&root, &args);
        assert_eq!(code, 0, "{err}");
        golden(&format!("report.{ck}.txt"), &out);
    }
    // Rows by learning rate only pool both batch sizes; running runs may count on request.
    let (out, _, code) = sftctl(
        &root,
        &[
            "report",
            "demo",
            "--rows",
            "lr",
            "--metrics",
            "mmlu",
            "--include-running",
            "--no-samples-to-peak",
        ],
    );
    assert_eq!(code, 0);
    golden("report.by-lr.txt", &out);
}

#[test]
fn latex_output_compiles_or_has_booktabs_structure() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let (tex, err, code) = sftctl(&root, &["report", "demo", "--format", "latex"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = tex.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("\\begin{tabular}{llr")));
    let pos = |s: &str| lines.iter().position(|l| *l == s).unwrap();
    assert!(pos("\\toprule") < pos("\\midrule") && pos("\\midrule") < pos("\\bottomrule"));
    let n_cols = lines[pos("\\toprule") + 1].matches(" & ").count();
    for l in &lines[pos("\\midrule") + 1..pos("\\bottomrule")] {
        assert_eq!(l.matches(" & ").count(), n_cols, "{l}");
        assert!(l.ends_with(" \\\\"), "{l}");
    }
    if let Ok(out) = Command::new("pdflatex").arg("--version").output()
        && out.status.success()
    {
        let doc = format!(
            "\\documentclass{{article}}\\usepackage{{booktabs}}\\begin{{document}}\n{tex}\\end{{document}}\n"
        );
        fs_err::write(dir.path().join("t.tex"), doc).unwrap();
        let st = Command::new("pdflatex")
            .args(["-interaction=nonstopmode", "-halt-on-error", "t.tex"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}

#[test]
fn early_ranking_and_prune_dry_run_match_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let (out, err, code) = sftctl(
        &root,
        &["report", "demo", "--early", "640", "--metrics", "mmlu"],
    );
    assert_eq!(code, 0, "{err}");
    golden("early.txt", &out);
    let (out, err, code) = sftctl(&root, &["prune", "demo", "--after", "640", "--keep", "1"]);
    assert_eq!(code, 0, "{err}");
    golden("prune.txt", &format!("{out}--- stderr\n{err}"));
    // The dry run changed nothing.
    let run = root.join("sweeps/demo/runs/r101");
    assert!(!run.join("result.json").exists());
}

#[test]
fn imported_scores_become_columns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let lm = dir.path().join("lm.json");
    fs_err::write(
        &lm,
        r#"{"results": {"hellaswag": {"acc,none": 0.5, "acc_norm,none": 0.6, "alias": "hellaswag"}}}"#,
    )
    .unwrap();
    let mt = dir.path().join("mt_bench.json");
    fs_err::write(&mt, r#"{"score": 6.5}"#).unwrap();
    for id in ["r000", "r001"] {
        let (_, err, code) = sftctl(
            &root,
            &["import", id, "--checkpoint", "800", lm.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
        let (_, err, code) = sftctl(
            &root,
            &[
                "import",
                id,
                "--checkpoint",
                "step-800",
                mt.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (out, err, code) = sftctl(
        &root,
        &[
            "report",
            "demo",
            "--metrics",
            "hellaswag:acc_norm,mt_bench:score",
            "--no-samples-to-peak",
            "--format",
            "markdown",
        ],
    );
    assert_eq!(code, 0, "{err}");
    golden("report.imported.md", &out);
    let (_, err, code) = sftctl(
        &root,
        &[
            "import",
            "r000",
            "--checkpoint",
            "last",
            mt.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("`--checkpoint last`"), "{err}");
    let (_, err, code) = sftctl(
        &root,
        &["import", "nope", "--checkpoint", "1", mt.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no run `nope`"), "{err}");
}

/// Chromium's binary, when installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| PathBuf::from("/usr/bin").join(n))
        .find(|p| p.is_file())
}

#[test]
fn plots_and_html_report_are_written_and_render_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let plots = dir.path().join("plots");
    let html = dir.path().join("report.html");
    let (_, err, code) = sftctl(
        &root,
        &[
            "report",
            "demo",
            "--plots",
            plots.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    for name in [
        "loss.groups",
        "loss.runs",
        "grad_norm.groups",
        "runs/r000.loss",
        "runs/r101.grad_norm",
    ] {
        let svg = fs_err::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{name}.svg"
        );
        let png = fs_err::read(plots.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }
    let page = fs_err::read_to_string(&html).unwrap();
    assert!(page.contains("<table>") && page.matches("<svg").count() == 4);
    assert!(
        !page.contains("http://") || !page.contains("src=\"http"),
        "no external resources"
    );
    assert!(page.contains("<b>47.2 ± 0.3</b>"), "best cell marked");

    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("SFTCTL_REQUIRE_CHROMIUM").is_none(),
            "SFTCTL_REQUIRE_CHROMIUM is set but chromium is not installed"
        );
        eprintln!("skipped the browser check: chromium is not installed");
        return;
    };
    let profile = dir.path().join("profile");
    let shot = dir.path().join("report.png");
    let base = |extra: &[&str]| {
        let mut c = Command::new(&chrome);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", html.display()));
        c.output().unwrap()
    };
    let dom = base(&["--dump-dom"]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom_text.contains("<table>") && dom_text.matches("<svg").count() == 4);
    let log = String::from_utf8_lossy(&dom.stderr).to_string();
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    let out = base(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,2400",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = fs_err::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Kept as a test artifact.
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    fs_err::copy(&shot, &keep).unwrap();
    eprintln!("screenshot: {}", keep.display());
}

#[test]
fn prune_with_yes_cancels_the_predicted_worst_local_jobs() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    write_ledger(&root);
    let sweep = Ledger::at(&root).sweep("demo");
    // The three running points get a live local job each: a sleeping process group.
    let mut children = Vec::new();
    for id in ["r012", "r101", "r111"] {
        let child = Command::new("sleep")
            .arg("120")
            .process_group(0)
            .spawn()
            .unwrap();
        sweep
            .run(id)
            .write_local_job(&sftctl_ledger::LocalJob {
                job_id: format!("local-{id}"),
                state: sftctl_ledger::LocalState::Running,
                worker_pid: std::process::id(),
                host: sftctl_ledger::claim::hostname(),
                pid: Some(child.id()),
                exit_code: None,
                signal: None,
                requeues: 0,
                updated_at: t0(),
            })
            .unwrap();
        children.push((id, child));
    }
    let (out, err, code) = sftctl(
        &root,
        &["prune", "demo", "--after", "640", "--keep", "1", "--yes"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("local-r111") && out.contains("local-r101"),
        "{out}"
    );
    for (id, mut child) in children {
        let j = sweep
            .run(id)
            .read_local_job(&format!("local-{id}"))
            .unwrap()
            .unwrap();
        let cancelled = j.state == sftctl_ledger::LocalState::Cancelled;
        assert_eq!(cancelled, id != "r012", "{id}: {:?}", j.state);
        if cancelled {
            let status = child.wait().unwrap();
            assert!(!status.success(), "{id} was signalled");
        } else {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the kept point still runs"
            );
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

/// A sweep `name` whose runs have constant early statistics `(grad_norm, loss)` over 8 steps of
/// 8 samples; completed runs also have an `mmlu` score that is exactly
/// `0.5 - 0.1 x grad_norm + 0.05 x loss`; running runs have no score and no result.
fn write_linear_sweep(root: &Path, name: &str, completed: &[(f64, f64)], running: &[(f64, f64)]) {
    let l = Ledger::at(root);
    if l.info().unwrap().is_none() {
        Ledger::create(root, "test").unwrap();
    }
    let sweep = l.sweep(name);
    let runs: Vec<(String, (f64, f64), bool)> = completed
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("{name}-c{i}"), *s, true))
        .chain(
            running
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("{name}-r{i}"), *s, false)),
        )
        .collect();
    sweep
        .write_sweep(&SweepRecord {
            format_version: 1,
            name: name.into(),
            created_at: t0(),
            updated_at: t0(),
            spec_sha256: "0".into(),
            executor: Executor::Local,
            runtimes: vec![],
            runs: runs.iter().map(|r| r.0.clone()).collect(),
        })
        .unwrap();
    for (id, (g, loss), done) in &runs {
        let dir = submitted_run(&sweep, id, id, serde_json::json!({"batch_size": 8}));
        let mut w = RunWriter::open(dir.path(), 0, None).unwrap();
        for step in 1..=8u64 {
            w.metric(&MetricRecord {
                step,
                epoch: 0.0,
                samples_seen: step * 8,
                tokens: step * 800,
                loss_tokens: step * 400,
                loss: *loss,
                grad_norm: *g,
                lr: 1e-5,
                step_time_s: 0.1,
                tokens_per_s: 1000.0,
                mem_bytes: None,
                at: t0(),
            })
            .unwrap();
        }
        if *done {
            write_eval_at(
                dir.path(),
                &EvalResult {
                    name: "mmlu".into(),
                    step: 8,
                    metrics: BTreeMap::from([("acc".into(), 0.5 - 0.1 * g + 0.05 * loss)]),
                    at: t0(),
                },
            )
            .unwrap();
            w.write_result(&RunResult {
                status: ResultStatus::Completed,
                job_id: format!("local-{id}"),
                final_step: 8,
                samples_seen: 64,
                tokens: 0,
                final_loss: Some(*loss),
                wall_s: 1.0,
                at: t0(),
                message: None,
            })
            .unwrap();
        }
    }
}

/// `--predictor fitted`: a least-squares fit of the final score on early gradient norm and loss
/// over finished runs (the sweep's own, or `--fit-from` others) recovers an exactly linear
/// relation, ranks the running points by the prediction, and `prune` cancels the worst; too
/// few finished runs is a clear error.
#[test]
fn fitted_predictor_learns_from_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ledger");
    let finished = [
        (1.0, 2.0),
        (2.0, 2.5),
        (1.5, 3.5),
        (3.0, 2.2),
        (0.5, 2.8),
        (2.5, 3.9),
    ];
    // Predicted: r0 0.5-0.1+0.1 = 0.50, r1 0.5-0.3+0.2 = 0.40, r2 0.5-0.05+0.15 = 0.60.
    let running = [(1.0, 2.0), (3.0, 4.0), (0.5, 3.0)];
    write_linear_sweep(&root, "lin", &finished, &running);

    let (out, err, code) = sftctl(
        &root,
        &[
            "report",
            "lin",
            "--early",
            "64",
            "--predictor",
            "fitted",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fit = &v["fit"];
    assert_eq!(fit["n"], 6, "{v:#}");
    assert_eq!(fit["metric"], "mmlu:acc");
    for (key, want) in [
        ("intercept", 0.5),
        ("grad_norm_coef", -0.1),
        ("loss_coef", 0.05),
        ("r2", 1.0),
    ] {
        let got = fit[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want}");
    }
    let order: Vec<&str> = v["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["lin-r2", "lin-r0", "lin-r1"]);
    let top = v["ranking"][0]["score"].as_f64().unwrap();
    assert!((top - 0.6).abs() < 1e-9, "{top}");

    // The text report states the fit.
    let (out, _, code) = sftctl(
        &root,
        &["report", "lin", "--early", "64", "--predictor", "fitted"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("fitted on 6 finished run(s): mmlu:acc = 0.5000 -0.1000 x grad_norm +0.0500 x loss (R^2 1.000)"), "{out}");

    // prune ranks the same way and would cancel the predicted worst.
    let (out, err, code) = sftctl(
        &root,
        &[
            "prune",
            "lin",
            "--after",
            "64",
            "--keep",
            "2",
            "--predictor",
            "fitted",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cancel"], serde_json::json!(["lin-r1"]), "{v:#}");

    // A sweep with only running points learns from another one with --fit-from.
    write_linear_sweep(&root, "new", &[], &running);
    let (out, err, code) = sftctl(
        &root,
        &[
            "prune",
            "new",
            "--after",
            "64",
            "--keep",
            "1",
            "--predictor",
            "fitted",
            "--fit-from",
            "lin",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fit"]["n"], 6);
    assert_eq!(
        v["cancel"],
        serde_json::json!(["new-r0", "new-r1"]),
        "{v:#}"
    );

    // Without finished runs to learn from: exit 1, and why.
    let (_, err, code) = sftctl(
        &root,
        &[
            "prune",
            "new",
            "--after",
            "64",
            "--keep",
            "1",
            "--predictor",
            "fitted",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no evaluated finished run"), "{err}");
    write_linear_sweep(&root, "few", &finished[..3], &running);
    let (_, err, code) = sftctl(
        &root,
        &["report", "few", "--early", "64", "--predictor", "fitted"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs at least 4 finished runs"), "{err}");
}
