//! The evaluations a sweep asks for, as the ledger holds them: their configuration in a run's
//! `config.json` (`evals`, written by sftctl's plan, read by the runtime), the submissions of
//! evaluation jobs (`eval-submissions.jsonl`, single writer: sftctl under the submit claim), and
//! which checkpoints an evaluation has scored (`eval/scored/<name>.step-<n>.json`), which decides
//! whose weights must be kept.

use crate::Result;
use crate::io::{append_jsonl, read_json, read_jsonl, write_json_atomic};
use crate::layout::RunDir;
use crate::records::{Executor, Timestamp};
use crate::results::read_checkpoints;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One `[[eval]]` of a spec, resolved (paths absolute, defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    /// Name of the evaluation (results of the built-in scorer are stored under it).
    pub name: String,
    #[serde(flatten)]
    pub kind: EvalKind,
    /// Which checkpoints it scores.
    pub checkpoints: EvalCheckpoints,
    /// Where it runs.
    #[serde(rename = "where")]
    pub placement: EvalPlacement,
}

/// What an evaluation runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalKind {
    /// The runtime's MMLU-format scorer (`sftctl-train eval`).
    Mmlu {
        /// Directory with `dev.jsonl` and `test.jsonl` (absolute).
        data: String,
        shots: usize,
        /// Longest model input (default: the model's `max_position_embeddings`).
        #[serde(default)]
        max_length: Option<usize>,
        #[serde(default)]
        add_special_tokens: bool,
        /// `flex`, `tch-cpu`, `cuda:N` (default: `cuda:0` in a job with GPUs, else `flex`).
        #[serde(default)]
        backend: Option<String>,
    },
    /// A user's command (lm-evaluation-harness, a judge) run once per checkpoint as an argv
    /// with `{model}`, `{output}`, `{step}`, `{run_dir}`, `{name}` replaced; its JSON output is
    /// imported like `sftctl import` does.
    Command {
        command: Vec<String>,
        /// Also import the subtasks of lm-eval groups.
        #[serde(default)]
        all_tasks: bool,
    },
}

/// Which checkpoints an evaluation scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalCheckpoints {
    /// Every complete checkpoint (samples-to-peak needs them).
    All,
    /// The run's newest complete checkpoint.
    Final,
}

/// Where an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalPlacement {
    /// Its own Slurm job (or local job) after the training job succeeded.
    EvalJob,
    /// Inside the training job, after the last phase's final checkpoint (built-in only).
    TrainingJob,
}

impl EvalSpec {
    /// Steps of `complete` (ascending checkpoint steps) this evaluation scores.
    pub fn wanted(&self, complete: &[u64]) -> Vec<u64> {
        match self.checkpoints {
            EvalCheckpoints::All => complete.to_vec(),
            EvalCheckpoints::Final => complete.last().copied().into_iter().collect(),
        }
    }
}

/// `eval/scored/<name>.step-<n>.json`: evaluation `eval` has scored the checkpoint of `step`,
/// producing the results named in `results` (task names for lm-eval output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub eval: String,
    pub step: u64,
    pub results: Vec<String>,
    pub at: Timestamp,
}

/// One line of `<run>/eval-submissions.jsonl`: a job that runs evaluation `eval` of this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSubmission {
    pub eval: String,
    /// Slurm job id (`123` or `123_4`), or `local-<token>-<i>`.
    pub job_id: String,
    pub batch: String,
    /// 1 for the first job of this evaluation, 2 after one `--retry-failed`, …
    pub attempt: u32,
    pub executor: Executor,
    pub submitted_at: Timestamp,
    /// The training job it waits for (`afterok`/`aftercorr`), if any.
    #[serde(default)]
    pub depends_on: Option<String>,
}

impl RunDir {
    pub fn eval_submissions(&self) -> PathBuf {
        self.path().join("eval-submissions.jsonl")
    }
    /// The batch script of evaluation `name`.
    pub fn eval_script(&self, name: &str) -> PathBuf {
        self.path().join(eval_script_name(name))
    }
    pub fn scored_path(&self, name: &str, step: u64) -> PathBuf {
        self.eval_dir()
            .join("scored")
            .join(format!("{name}.step-{step}.json"))
    }
    /// Appends an evaluation job; the caller holds the sweep's submit claim (single writer).
    pub fn append_eval_submission(&self, s: &EvalSubmission) -> Result<()> {
        self.guard(&self.eval_submissions())?;
        append_jsonl(&self.eval_submissions(), s, true)
    }
    pub fn read_eval_submissions(&self) -> Result<Vec<EvalSubmission>> {
        Ok(read_jsonl(&self.eval_submissions())?.0)
    }
    pub fn write_eval_script(&self, name: &str, text: &str) -> Result<()> {
        let p = self.eval_script(name);
        self.guard(&p)?;
        crate::io::write_atomic(&p, text.as_bytes())?;
        crate::layout::executable(&p)
    }
}

/// File name of an evaluation's batch script in the run directory.
pub fn eval_script_name(name: &str) -> String {
    format!("eval-{name}.sh")
}

/// The newest submission of each evaluation, by evaluation name.
pub fn latest_eval_jobs(subs: &[EvalSubmission]) -> Vec<&EvalSubmission> {
    let mut out: Vec<&EvalSubmission> = Vec::new();
    for s in subs {
        match out.iter_mut().find(|o| o.eval == s.eval) {
            Some(o) if s.attempt >= o.attempt => *o = s,
            Some(_) => {}
            None => out.push(s),
        }
    }
    out
}

/// The evaluations in a run's `config.json` (none when the file or the key is missing).
pub fn run_evals(run_dir: &Path) -> Result<Vec<EvalSpec>> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        evals: Vec<EvalSpec>,
    }
    let c: Option<Config> = read_json(&RunDir::at(run_dir).config_json())?;
    Ok(c.map(|c| c.evals).unwrap_or_default())
}

/// Records that evaluation `s.eval` scored the checkpoint of `s.step`.
pub fn mark_scored(run_dir: &Path, s: &Scored) -> Result<PathBuf> {
    let p = RunDir::at(run_dir).scored_path(&s.eval, s.step);
    write_json_atomic(&p, s)?;
    Ok(p)
}

/// Whether evaluation `name` has scored the checkpoint of `step`: its marker, or a result of
/// that name at that step (the built-in scorer run by hand writes only the result).
pub fn is_scored(run_dir: &Path, name: &str, step: u64) -> bool {
    let d = RunDir::at(run_dir);
    d.scored_path(name, step).is_file() || d.eval_at(name, step).is_file()
}

/// Steps evaluation `name` has scored (its markers), ascending; weights may be gone since.
pub fn scored_steps(run_dir: &Path, name: &str) -> Result<Vec<u64>> {
    let dir = RunDir::at(run_dir).eval_dir().join("scored");
    let mut out = Vec::new();
    let rd = match fs_err::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let prefix = format!("{name}.step-");
    for e in rd {
        let file = e?.file_name().to_string_lossy().into_owned();
        if let Some(step) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(step);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether some evaluation in `evals` still has to score the checkpoint of `step`, given the
/// newest complete checkpoint `newest` (what a `final` evaluation scores).
pub fn weights_needed(run_dir: &Path, evals: &[EvalSpec], step: u64, newest: u64) -> bool {
    evals.iter().any(|e| {
        let wants = match e.checkpoints {
            EvalCheckpoints::All => true,
            EvalCheckpoints::Final => step == newest,
        };
        wants && !is_scored(run_dir, &e.name, step)
    })
}

/// `(evaluation, step)` pairs the run's evaluations have not scored yet, over its complete
/// checkpoints.
pub fn unscored(run_dir: &Path) -> Result<Vec<(String, u64)>> {
    let evals = run_evals(run_dir)?;
    let steps: Vec<u64> = read_checkpoints(run_dir)?.iter().map(|c| c.step).collect();
    let mut out = Vec::new();
    for e in &evals {
        for s in e.wanted(&steps) {
            if !is_scored(run_dir, &e.name, s) {
                out.push((e.name.clone(), s));
            }
        }
    }
    Ok(out)
}

/// An evaluation name usable in file names and job names.
pub fn check_eval_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "evaluation name `{name}` may hold only letters, digits and `_-.` and must not start with `.`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::EvalResult;
    use crate::results::write_eval_at;

    fn spec(name: &str, checkpoints: EvalCheckpoints) -> EvalSpec {
        EvalSpec {
            name: name.into(),
            kind: EvalKind::Command {
                command: vec!["x".into(), "{model}".into(), "{output}".into()],
                all_tasks: false,
            },
            checkpoints,
            placement: EvalPlacement::EvalJob,
        }
    }

    #[test]
    fn config_form_round_trips() {
        let e = EvalSpec {
            name: "mmlu".into(),
            kind: EvalKind::Mmlu {
                data: "/d".into(),
                shots: 5,
                max_length: None,
                add_special_tokens: false,
                backend: None,
            },
            checkpoints: EvalCheckpoints::All,
            placement: EvalPlacement::TrainingJob,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "mmlu");
        assert_eq!(v["where"], "training-job");
        assert_eq!(v["checkpoints"], "all");
        assert_eq!(serde_json::from_value::<EvalSpec>(v).unwrap(), e);
    }

    #[test]
    fn weights_are_needed_until_every_evaluation_scored_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let evals = [
            spec("all", EvalCheckpoints::All),
            spec("fin", EvalCheckpoints::Final),
        ];
        // (step, newest) -> needed, before anything is scored.
        assert!(weights_needed(d, &evals, 10, 30));
        assert!(weights_needed(d, &evals, 30, 30));
        mark_scored(
            d,
            &Scored {
                eval: "all".into(),
                step: 10,
                results: vec![],
                at: Timestamp::now(),
            },
        )
        .unwrap();
        assert!(!weights_needed(d, &evals, 10, 30), "only `final` is left");
        write_eval_at(
            d,
            &EvalResult {
                name: "all".into(),
                step: 30,
                metrics: Default::default(),
                at: Timestamp::now(),
            },
        )
        .unwrap();
        assert!(weights_needed(d, &evals, 30, 30), "`fin` has not scored 30");
        mark_scored(
            d,
            &Scored {
                eval: "fin".into(),
                step: 30,
                results: vec!["mmlu".into()],
                at: Timestamp::now(),
            },
        )
        .unwrap();
        assert!(!weights_needed(d, &evals, 30, 30));
        assert!(!weights_needed(d, &[], 10, 30));
        assert_eq!(scored_steps(d, "all").unwrap(), [10]);
        assert_eq!(scored_steps(d, "fin").unwrap(), [30]);
        // The marker directory is not read as an evaluation result.
        assert_eq!(crate::results::read_evals(d).unwrap().len(), 1);
    }

    #[test]
    fn latest_job_per_evaluation() {
        let s = |eval: &str, job: &str, attempt| EvalSubmission {
            eval: eval.into(),
            job_id: job.into(),
            batch: "b".into(),
            attempt,
            executor: Executor::Slurm,
            submitted_at: Timestamp::now(),
            depends_on: None,
        };
        let subs = [s("a", "1", 1), s("b", "2", 1), s("a", "3", 2)];
        let l = latest_eval_jobs(&subs);
        assert_eq!(
            l.iter().map(|s| s.job_id.as_str()).collect::<Vec<_>>(),
            ["3", "2"]
        );
        assert!(check_eval_name("lm_eval-1.0").is_ok());
        assert!(check_eval_name("../x").is_err());
        assert!(check_eval_name(".x").is_err());
    }
}
