//! The `sftctl-train eval` job: loads the model of each chosen checkpoint of a run (or one model
//! directory), scores the test split, and records the scores in the run's ledger directory
//! (`eval/<name>.step-<n>.json`, per-question values beside it as `.questions.jsonl`).

use super::mmlu::load_questions;
use super::score::{EvalOptions, MmluReport, evaluate};
use crate::weights::load_model;
use anyhow::Context;
use burn::tensor::Device;
use sftctl_data::tokenizer::ChatTokenizer;
use sftctl_ledger::io::append_jsonl;
use sftctl_ledger::results::{read_checkpoints, write_eval_at};
use sftctl_ledger::{EvalResult, RunDir, Timestamp};
use std::path::{Path, PathBuf};

/// Which checkpoints of a run to evaluate.
#[derive(Debug, Clone)]
pub enum Which {
    Latest,
    All,
    Steps(Vec<u64>),
}

/// Scores the model in `model_dir`; the tokenizer is `tokenizer_dir`'s, else the model's.
pub fn eval_dir(
    model_dir: &Path,
    tokenizer_dir: Option<&Path>,
    data: &Path,
    o: &EvalOptions,
    device: &Device,
) -> anyhow::Result<MmluReport> {
    let dev = load_questions(&data.join("dev.jsonl"))?;
    let test = load_questions(&data.join("test.jsonl"))?;
    let tdir = tokenizer_dir.unwrap_or(model_dir);
    let tok = ChatTokenizer::from_dir(tdir)
        .with_context(|| format!("loading the tokenizer of `{}`", tdir.display()))?;
    let model = load_model(model_dir, device)
        .with_context(|| format!("loading the model in `{}`", model_dir.display()))?;
    Ok(evaluate(&model, &tok, &dev, &test, o, device)?)
}

/// Evaluates checkpoints of the run in `run_dir` and writes each result into the ledger;
/// returns `(step, report)` per checkpoint.
pub fn eval_run(
    run_dir: &Path,
    which: &Which,
    name: &str,
    tokenizer_dir: Option<&Path>,
    data: &Path,
    o: &EvalOptions,
    device: &Device,
) -> anyhow::Result<Vec<(u64, MmluReport)>> {
    let all = read_checkpoints(run_dir)?;
    let steps: Vec<u64> = match which {
        Which::Latest => all.last().map(|c| c.step).into_iter().collect(),
        Which::All => all.iter().map(|c| c.step).collect(),
        Which::Steps(s) => {
            for st in s {
                anyhow::ensure!(
                    all.iter().any(|c| c.step == *st),
                    "run `{}` has no complete checkpoint at step {st}",
                    run_dir.display()
                );
            }
            s.clone()
        }
    };
    anyhow::ensure!(
        !steps.is_empty(),
        "run `{}` has no complete checkpoint to evaluate",
        run_dir.display()
    );
    let dir = RunDir::at(run_dir);
    let mut out = Vec::new();
    for step in steps {
        let ck: PathBuf = dir.checkpoints().join(format!("step-{step}"));
        let r = eval_dir(&ck, tokenizer_dir, data, o, device)?;
        let p = write_eval_at(
            run_dir,
            &EvalResult {
                name: name.to_owned(),
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
        out.push((step, r));
    }
    Ok(out)
}
