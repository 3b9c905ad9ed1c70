//! Log-likelihood scoring as lm-evaluation-harness does it: trailing whitespace of the context
//! moves into the continuation; `whole = enc(context + continuation)`, `ctx = enc(context)`, the
//! continuation tokens are `whole[len(ctx):]`; the model reads `(ctx + cont)[-(max_length+1):][:-1]`
//! and the continuation's log-softmax (float32) values are summed. The prediction is the argmax
//! over `" A"`..`" D"`, the first letter winning ties.

use super::EvalError;
use super::mmlu::{LETTERS, Question, prompt, shots};
use crate::model::{CausalLm, IGNORE_INDEX, PackedBatch, PackedRow, token_losses};
use burn::tensor::Device;
use serde::Serialize;
use sftctl_data::tokenizer::ChatTokenizer;
use std::collections::BTreeMap;

/// How questions are scored.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Few-shot examples per question (MMLU: 5).
    pub shots: usize,
    /// Longest model input; longer inputs lose their oldest tokens, as in lm-eval.
    pub max_length: usize,
    /// Apply the tokenizer's post-processor (a BOS for Llama 3); lm-eval's default is off.
    pub add_special_tokens: bool,
}

/// One scored question.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionResult {
    pub index: usize,
    pub subject: String,
    /// Summed log-likelihood of `" A"`..`" D"`.
    pub loglikelihoods: [f64; 4],
    pub prediction: usize,
    pub answer: usize,
    /// Context tokens before truncation.
    pub context_tokens: usize,
}

/// Scores of a test split.
#[derive(Debug, Clone, Serialize)]
pub struct MmluReport {
    /// Question-weighted (micro) accuracy.
    pub acc: f64,
    /// Unweighted mean of the per-subject accuracies (macro).
    pub acc_subject_mean: f64,
    pub subjects: BTreeMap<String, f64>,
    pub questions: Vec<QuestionResult>,
}

/// The context and continuation token ids of one request, split as lm-eval splits them.
pub fn encode_pair(
    tok: &ChatTokenizer,
    context: &str,
    continuation: &str,
    special: bool,
) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
    let trimmed = context.trim_end();
    let (ctx, cont) = (
        trimmed,
        format!("{}{continuation}", &context[trimmed.len()..]),
    );
    let enc = |s: &str| {
        tok.encode(s, special)
            .map_err(|e| EvalError::Tokenizer(e.to_string()))
    };
    let whole = enc(&format!("{ctx}{cont}"))?;
    let ctx_enc = enc(ctx)?;
    let cont_enc = whole.get(ctx_enc.len()..).unwrap_or_default().to_vec();
    Ok((ctx_enc, cont_enc))
}

/// Summed log-likelihood of each continuation after its context, in one batch.
pub fn loglikelihoods(
    model: &CausalLm,
    requests: &[(Vec<u32>, Vec<u32>)],
    max_length: usize,
    device: &Device,
) -> Vec<f64> {
    let mut rows: Vec<PackedRow> = requests
        .iter()
        .map(|(ctx, cont)| {
            let all: Vec<i64> = ctx.iter().chain(cont).map(|&t| i64::from(t)).collect();
            let seq = &all[all.len().saturating_sub(max_length + 1)..];
            let n = seq.len() - 1;
            let first_cont = seq.len() - cont.len().min(n);
            PackedRow {
                tokens: seq[..n].to_vec(),
                positions: (0..n as i64).collect(),
                seq_ids: vec![0; n],
                targets: (0..n)
                    .map(|t| {
                        if t + 1 >= first_cont {
                            seq[t + 1]
                        } else {
                            IGNORE_INDEX
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let len = rows.iter().map(PackedRow::len).max().unwrap_or(0);
    for r in &mut rows {
        r.pad_to(len, 0);
    }
    let b = PackedBatch::new(&rows, device);
    let logits = model.forward(b.tokens, b.positions, b.seq_ids);
    let losses = token_losses(logits, b.targets);
    let v: Vec<f32> = losses
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 losses");
    v.chunks(len.max(1))
        .take(rows.len())
        .map(|row| -row.iter().map(|&x| f64::from(x)).sum::<f64>())
        .collect()
}

/// Scores every test question; few-shot examples come from `dev`.
pub fn evaluate(
    model: &CausalLm,
    tok: &ChatTokenizer,
    dev: &[Question],
    test: &[Question],
    o: &EvalOptions,
    device: &Device,
) -> Result<MmluReport, EvalError> {
    let mut questions = Vec::with_capacity(test.len());
    for (i, q) in test.iter().enumerate() {
        let ctx = prompt(q, &shots(q, dev, o.shots));
        let mut requests = Vec::with_capacity(4);
        for l in LETTERS {
            requests.push(encode_pair(
                tok,
                &ctx,
                &format!(" {l}"),
                o.add_special_tokens,
            )?);
        }
        let context_tokens = requests[0].0.len();
        let ll = loglikelihoods(model, &requests, o.max_length, device);
        let lls: [f64; 4] = [ll[0], ll[1], ll[2], ll[3]];
        let prediction = (0..4).fold(0, |best, k| if lls[k] > lls[best] { k } else { best });
        questions.push(QuestionResult {
            index: i,
            subject: q.subject.clone(),
            loglikelihoods: lls,
            prediction,
            answer: q.answer,
            context_tokens,
        });
    }
    let correct = |r: &&QuestionResult| r.prediction == r.answer;
    let acc = questions.iter().filter(correct).count() as f64 / questions.len().max(1) as f64;
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &questions {
        let e = by.entry(r.subject.clone()).or_default();
        e.0 += usize::from(r.prediction == r.answer);
        e.1 += 1;
    }
    let subjects: BTreeMap<String, f64> = by
        .into_iter()
        .map(|(s, (c, n))| (s, c as f64 / n as f64))
        .collect();
    let acc_subject_mean = subjects.values().sum::<f64>() / subjects.len().max(1) as f64;
    Ok(MmluReport {
        acc,
        acc_subject_mean,
        subjects,
        questions,
    })
}

impl MmluReport {
    /// The metrics stored in the ledger: `acc`, `acc_subject_mean` and `acc/<subject>`.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("acc".to_owned(), self.acc),
            ("acc_subject_mean".to_owned(), self.acc_subject_mean),
        ]);
        for (s, a) in &self.subjects {
            m.insert(format!("acc/{s}"), *a);
        }
        m
    }
}
