//! The evaluations a run's `config.json` asks for (the spec's `[[eval]]`): running one over the
//! checkpoints it has not scored yet (`sftctl-train eval-job`, or inside the training job after
//! the last phase), importing a command's JSON output through the ledger, and the rule that keeps
//! a checkpoint's weights until every evaluation that wants them has scored them.

use super::job::eval_dir;
use super::score::EvalOptions;
use crate::backend::BackendChoice;
use crate::train::checkpoint::{CheckpointInfo, Checkpoints};
use anyhow::Context;
use sftctl_ledger::evals::{
    EvalKind, EvalPlacement, EvalSpec, Scored, is_scored, mark_scored, run_evals, weights_needed,
};
use sftctl_ledger::io::append_jsonl;
use sftctl_ledger::results::write_eval_at;
use sftctl_ledger::{EvalResult, RunDir, Timestamp};
use std::path::{Path, PathBuf};

/// The `keep_weights` rule of [`Checkpoints::prune`] for the run owning `checkpoints_root`
/// (`<run>/checkpoints`): keep a checkpoint while some evaluation of the run's `config.json`
/// that wants it (`all`, or `final` for the newest) has not scored it. Without a `config.json`
/// or evaluations nothing is kept.
pub fn keep_for_evals(checkpoints_root: &Path) -> impl Fn(&CheckpointInfo) -> bool + use<> {
    let run_dir = checkpoints_root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let evals = run_evals(&run_dir).unwrap_or_default();
    let newest = Checkpoints::open(checkpoints_root)
        .and_then(|c| c.complete())
        .ok()
        .and_then(|c| c.last().map(|c| c.marker.step))
        .unwrap_or(0);
    move |c: &CheckpointInfo| weights_needed(&run_dir, &evals, c.marker.step, newest)
}

/// Finds evaluation `name` in the run's `config.json`.
pub fn find(run_dir: &Path, name: &str) -> anyhow::Result<EvalSpec> {
    let evals = run_evals(run_dir)?;
    evals
        .iter()
        .find(|e| e.name == name)
        .cloned()
        .with_context(|| {
            format!(
                "`{}` has no evaluation `{name}` (it has: {})",
                RunDir::at(run_dir).config_json().display(),
                evals
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Scores, with evaluation `e`, every checkpoint it wants that it has not scored yet, records
/// the scores, then prunes the weights no evaluation needs any more. `backend` stands in when
/// the evaluation names none (the training job's own). Returns the steps scored.
pub fn run_one(run_dir: &Path, e: &EvalSpec, backend: Option<&str>) -> anyhow::Result<Vec<u64>> {
    let checkpoints = Checkpoints::open(RunDir::at(run_dir).checkpoints())?;
    let complete = checkpoints.complete()?;
    let steps: Vec<u64> = complete.iter().map(|c| c.marker.step).collect();
    anyhow::ensure!(
        !steps.is_empty(),
        "run `{}` has no complete checkpoint to evaluate",
        run_dir.display()
    );
    let todo: Vec<u64> = e
        .wanted(&steps)
        .into_iter()
        .filter(|&s| !is_scored(run_dir, &e.name, s))
        .collect();
    let mut device = None;
    for &step in &todo {
        let ck = &complete
            .iter()
            .find(|c| c.marker.step == step)
            .expect("a wanted step is complete")
            .dir;
        let results = match &e.kind {
            EvalKind::Mmlu {
                data,
                shots,
                max_length,
                add_special_tokens,
                backend: own,
            } => {
                if device.is_none() {
                    let choice = own.as_deref().or(backend).unwrap_or("flex");
                    let b = choice
                        .parse::<BackendChoice>()
                        .map_err(|m| anyhow::anyhow!("evaluation `{}`: {m}", e.name))?;
                    device = Some(b.device()?);
                }
                let max_length = match max_length {
                    Some(n) => *n,
                    None => {
                        crate::config::ModelConfig::from_file(&ck.join("config.json"))?
                            .max_position_embeddings
                    }
                };
                let o = EvalOptions {
                    shots: *shots,
                    max_length,
                    add_special_tokens: *add_special_tokens,
                };
                let r = eval_dir(
                    ck,
                    None,
                    Path::new(data),
                    &o,
                    device.as_ref().expect("set above"),
                )?;
                let p = write_eval_at(
                    run_dir,
                    &EvalResult {
                        name: e.name.clone(),
                        step,
                        metrics: r.metrics(),
                        at: Timestamp::now(),
                    },
                )?;
                let details = p.with_extension("questions.jsonl");
                if details.exists() {
                    fs_err::remove_file(&details)?;
                }
                for q in &r.questions {
                    append_jsonl(&details, q, false)?;
                }
                eprintln!(
                    "{} step {step}: acc {:.4} (subject mean {:.4}) over {} questions",
                    e.name,
                    r.acc,
                    r.acc_subject_mean,
                    r.questions.len()
                );
                vec![e.name.clone()]
            }
            EvalKind::Command { command, all_tasks } => {
                run_command(run_dir, &e.name, command, *all_tasks, step, ck)?
            }
        };
        mark_scored(
            run_dir,
            &Scored {
                eval: e.name.clone(),
                step,
                results,
                at: Timestamp::now(),
            },
        )?;
    }
    // Weights kept only for evaluations go once every evaluation has scored them; the
    // resumable checkpoints (the trainer's `--keep-last`) stay, and so does the newest phase's
    // best checkpoint by validation loss (a next phase may start from it: docs/training.md).
    let keep = keep_for_evals(checkpoints.root());
    let complete = checkpoints.complete()?;
    let newest_phase = complete.last().map(|c| c.marker.phase);
    let best: Vec<_> = crate::train::run::best_by_validation(&complete)
        .into_iter()
        .filter(|d| {
            complete
                .iter()
                .any(|c| &c.dir == d && Some(c.marker.phase) == newest_phase)
        })
        .collect();
    for dir in checkpoints.prune(usize::MAX, &|c| keep(c) || best.contains(&c.dir))? {
        eprintln!("pruned `{}`", dir.display());
    }
    Ok(todo)
}

/// Replaces the placeholders of a command evaluation's argv.
pub fn substitute(
    argv: &[String],
    model: &Path,
    output: &Path,
    step: u64,
    run_dir: &Path,
    name: &str,
) -> Vec<String> {
    argv.iter()
        .map(|w| {
            w.replace("{model}", &model.to_string_lossy())
                .replace("{output}", &output.to_string_lossy())
                .replace("{step}", &step.to_string())
                .replace("{run_dir}", &run_dir.to_string_lossy())
                .replace("{name}", name)
        })
        .collect()
}

/// Files lm-eval 0.4 writes for an `--output_path` ending in `.json`: the stem with a
/// timestamp, `<stem>_<time>.json`, beside it.
fn timestamped_siblings(output: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (output.parent(), output.file_stem()) else {
        return Vec::new();
    };
    let prefix = format!("{}_", stem.to_string_lossy());
    let Ok(rd) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    found.sort();
    found
}

/// The JSON a command left at `output`: the file itself; or, as lm-eval 0.4 does with an
/// `--output_path` ending in `.json`, `<stem>_<time>.json` beside it (the newest); or (an
/// `--output_path` directory, `<dir>/<model>/results_<time>.json`) the newest `.json` file
/// below that directory.
fn output_file(output: &Path) -> anyhow::Result<PathBuf> {
    if output.is_file() {
        return Ok(output.to_owned());
    }
    if !output.exists()
        && let Some(newest) = timestamped_siblings(output).pop()
    {
        return Ok(newest);
    }
    anyhow::ensure!(
        output.is_dir(),
        "the evaluation command wrote nothing at `{}`",
        output.display()
    );
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![output.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let t = fs_err::metadata(&p)?.modified()?;
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    newest = Some((t, p));
                }
            }
        }
    }
    newest.map(|(_, p)| p).with_context(|| {
        format!(
            "the evaluation command left no `.json` file in `{}`",
            output.display()
        )
    })
}

/// Runs a command evaluation on the checkpoint in `model` and imports its JSON (an lm-eval
/// results file or an object of named scores) as results at `step`; returns their names.
fn run_command(
    run_dir: &Path,
    name: &str,
    argv: &[String],
    all_tasks: bool,
    step: u64,
    model: &Path,
) -> anyhow::Result<Vec<String>> {
    let raw = RunDir::at(run_dir).eval_dir().join("raw");
    fs_err::create_dir_all(&raw)?;
    let output = raw.join(format!("{name}.step-{step}.json"));
    if output.is_dir() {
        fs_err::remove_dir_all(&output)?;
    } else if output.exists() {
        fs_err::remove_file(&output)?;
    }
    // A retried job must not pick up what an earlier attempt left.
    for stale in timestamped_siblings(&output) {
        fs_err::remove_file(&stale)?;
    }
    let words = substitute(argv, model, &output, step, run_dir, name);
    eprintln!("{name} step {step}: running {words:?}");
    // A long-running evaluation whose output goes to the job log, not a captured command.
    #[allow(clippy::disallowed_methods)]
    let status = std::process::Command::new(&words[0])
        .args(&words[1..])
        .current_dir(run_dir)
        .status()
        .with_context(|| format!("starting `{}`", words[0]))?;
    anyhow::ensure!(
        status.success(),
        "evaluation `{name}` at step {step}: `{}` exited with {status}",
        words.join(" ")
    );
    let file = output_file(&output)?;
    let text = fs_err::read_to_string(&file)?;
    let imported = sftctl_ledger::import::parse(&text, &file.to_string_lossy(), name, all_tasks)
        .map_err(|m| anyhow::anyhow!("evaluation `{name}` at step {step}: {m}"))?;
    let mut names = Vec::new();
    for (n, metrics) in imported.scores {
        write_eval_at(
            run_dir,
            &EvalResult {
                name: n.clone(),
                step,
                metrics,
                at: Timestamp::now(),
            },
        )?;
        names.push(n);
    }
    eprintln!(
        "{name} step {step}: imported {} ({})",
        names.join(", "),
        imported.kind
    );
    Ok(names)
}

/// After a completed training job: runs the evaluations placed inside it (`where =
/// "training-job"`) when `phase` is the run's last, on `backend`.
pub fn run_in_training_job(run_dir: &Path, phase: u32, backend: &str) -> anyhow::Result<()> {
    let evals: Vec<EvalSpec> = run_evals(run_dir)?
        .into_iter()
        .filter(|e| e.placement == EvalPlacement::TrainingJob)
        .collect();
    if evals.is_empty() {
        return Ok(());
    }
    #[derive(serde::Deserialize)]
    struct Phases {
        #[serde(default)]
        phases: Vec<u32>,
    }
    let p: Option<Phases> = sftctl_ledger::io::read_json(&RunDir::at(run_dir).config_json())?;
    let last = p
        .and_then(|p| p.phases.iter().max().copied())
        .is_none_or(|m| m <= phase);
    if !last {
        return Ok(());
    }
    for e in &evals {
        run_one(run_dir, e, Some(backend))
            .with_context(|| format!("evaluation `{}` in the training job", e.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_word_by_word() {
        let argv: Vec<String> = [
            "lm_eval",
            "pretrained={model},dtype=float32",
            "{output}",
            "--tag={name}@{step}",
            "{run_dir}/x",
            "{other}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = substitute(
            &argv,
            Path::new("/r/checkpoints/step-4"),
            Path::new("/r/eval/raw/lm.step-4.json"),
            4,
            Path::new("/r"),
            "lm",
        );
        assert_eq!(
            out,
            [
                "lm_eval",
                "pretrained=/r/checkpoints/step-4,dtype=float32",
                "/r/eval/raw/lm.step-4.json",
                "--tag=lm@4",
                "/r/x",
                "{other}"
            ]
        );
    }

    #[test]
    fn lm_evals_timestamped_file_beside_the_output_path_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("lm.step-4.json");
        // Another checkpoint's file and an unrelated one do not count.
        fs_err::write(tmp.path().join("lm.step-40_2026-01-01T00-00-00.json"), "{}").unwrap();
        fs_err::write(tmp.path().join("other.json"), "{}").unwrap();
        assert!(output_file(&out).is_err());
        let first = tmp.path().join("lm.step-4_2026-11-29T00-23-45.660899.json");
        let second = tmp.path().join("lm.step-4_2026-11-29T00-24-01.000001.json");
        fs_err::write(&first, "{}").unwrap();
        fs_err::write(&second, "{}").unwrap();
        assert_eq!(output_file(&out).unwrap(), second);
        assert_eq!(timestamped_siblings(&out), vec![first, second]);
    }

    #[test]
    fn an_output_directory_yields_its_newest_json_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lm.step-4.json");
        assert!(output_file(&out).is_err(), "nothing written");
        fs_err::create_dir_all(out.join("model")).unwrap();
        fs_err::write(out.join("model/results_1.json"), "{}").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs_err::write(out.join("model/results_2.json"), "{}").unwrap();
        fs_err::write(out.join("model/samples.txt"), "x").unwrap();
        assert_eq!(output_file(&out).unwrap(), out.join("model/results_2.json"));
        let file = dir.path().join("f.json");
        fs_err::write(&file, "{}").unwrap();
        assert_eq!(output_file(&file).unwrap(), file);
    }
}
