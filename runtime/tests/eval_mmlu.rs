//! MMLU-format scoring against transformers: per-choice log-likelihoods of a tiny random Llama on
//! `examples/eval/mmlu-tiny` equal those of `fixtures/make_eval_fixture.py` (lm-eval's method in
//! PyTorch) within 1e-4 relative error, with and without left truncation, and the predictions
//! equal those lm-evaluation-harness itself made (`fixtures/lm_eval_fixture.py`, per-subject local
//! tasks) on every question. The `eval` subcommand, run on a run directory's checkpoints, records the scores
//! in the ledger.

use std::path::{Path, PathBuf};
use std::process::Command;

use sftctl_data::tokenizer::ChatTokenizer;
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::eval::{EvalOptions, evaluate, load_questions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
fn data() -> PathBuf {
    root().join("examples/eval/mmlu-tiny")
}

#[test]
fn loglikelihoods_and_predictions_equal_transformers() {
    let expected: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(fixture("eval_expected.json")).unwrap())
            .unwrap();
    let lm_eval: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(fixture("eval_lm_eval.json")).unwrap())
            .unwrap();
    let tok = ChatTokenizer::from_dir(&fixture("eval_llama")).unwrap();
    let dev = load_questions(&data().join("dev.jsonl")).unwrap();
    let test = load_questions(&data().join("test.jsonl")).unwrap();
    // Every compiled backend: with `--features tch` also tch-CPU, where attention is libtorch's
    // fused kernel without autodiff.
    for backend in BackendChoice::compiled() {
        let device = backend.device().unwrap();
        let model = sftctl_runtime::weights::load_model(&fixture("eval_llama"), &device).unwrap();
        eprintln!(
            "{backend} (fused attention: {})",
            model.fused_attention(&device)
        );
        check_against_transformers(&model, &tok, &dev, &test, &device, &expected, &lm_eval);
    }
}

fn check_against_transformers(
    model: &sftctl_runtime::model::CausalLm,
    tok: &ChatTokenizer,
    dev: &[sftctl_runtime::eval::Question],
    test: &[sftctl_runtime::eval::Question],
    device: &burn::tensor::Device,
    expected: &serde_json::Value,
    lm_eval: &serde_json::Value,
) {
    for max_length in [4096usize, 96] {
        let o = EvalOptions {
            shots: 5,
            max_length,
            add_special_tokens: false,
        };
        let r = evaluate(model, tok, dev, test, &o, device).unwrap();
        let want = expected["cases"][max_length.to_string()]
            .as_array()
            .unwrap();
        assert_eq!(r.questions.len(), want.len());
        let by_lm_eval = lm_eval["cases"][max_length.to_string()].as_array().unwrap();
        assert_eq!(by_lm_eval.len(), r.questions.len());
        for (got, l) in r.questions.iter().zip(by_lm_eval) {
            assert_eq!(
                got.prediction as u64,
                l["prediction"].as_u64().unwrap(),
                "L={max_length} question {}: lm-eval predicted otherwise",
                got.index
            );
        }
        let mut worst = 0f64;
        for (got, w) in r.questions.iter().zip(want) {
            assert_eq!(
                got.context_tokens as u64,
                w["context_tokens"].as_u64().unwrap()
            );
            for k in 0..4 {
                let e = w["loglikelihoods"][k].as_f64().unwrap();
                let rel = (got.loglikelihoods[k] - e).abs() / e.abs();
                worst = worst.max(rel);
                assert!(
                    rel <= 1e-4,
                    "L={max_length} question {} choice {k}: {} vs transformers {e}",
                    got.index,
                    got.loglikelihoods[k]
                );
            }
            assert_eq!(got.prediction as u64, w["prediction"].as_u64().unwrap());
        }
        eprintln!("max_length {max_length}: worst relative error {worst:.2e}");
        // Both averages follow from the per-question predictions.
        let correct = r
            .questions
            .iter()
            .filter(|q| q.prediction == q.answer)
            .count();
        assert_eq!(r.acc, correct as f64 / r.questions.len() as f64);
        let macro_mean = r.subjects.values().sum::<f64>() / r.subjects.len() as f64;
        assert_eq!(r.acc_subject_mean, macro_mean);
        assert_eq!(r.subjects.len(), 3);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for e in fs_err::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs_err::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn eval_subcommand_scores_checkpoints_into_the_ledger() {
    let run = tempfile::tempdir().unwrap();
    let mut w = sftctl_ledger::RunWriter::open(run.path(), 0, None).unwrap();
    for (step, samples) in [(4u64, 32u64), (8, 64)] {
        let stage = w.checkpoint_staging(step).unwrap();
        copy_dir(&fixture("eval_llama"), &stage);
        w.commit_checkpoint(step, samples).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sftctl-train"))
        .args([
            "eval",
            "--all-checkpoints",
            "--max-length",
            "96",
            "--run-dir",
        ])
        .arg(run.path())
        .arg("--data")
        .arg(data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evals = sftctl_ledger::results::read_evals(run.path()).unwrap();
    assert_eq!(evals.iter().map(|e| e.step).collect::<Vec<_>>(), [4, 8]);
    let expected: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(fixture("eval_expected.json")).unwrap())
            .unwrap();
    let test = load_questions(&data().join("test.jsonl")).unwrap();
    let correct = expected["cases"]["96"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&test)
        .filter(|(w, q)| w["prediction"].as_u64().unwrap() as usize == q.answer)
        .count();
    assert_eq!(evals[0].metrics["acc"], correct as f64 / test.len() as f64);
    assert!(evals[0].metrics.contains_key("acc/world_geography"));
    let details = run.path().join("eval/mmlu.step-8.questions.jsonl");
    assert_eq!(
        fs_err::read_to_string(details).unwrap().lines().count(),
        test.len()
    );
    // A step without a checkpoint is refused by name.
    let out = Command::new(env!("CARGO_BIN_EXE_sftctl-train"))
        .args(["eval", "--steps", "5", "--run-dir"])
        .arg(run.path())
        .arg("--data")
        .arg(data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no complete checkpoint at step 5"));
}
