//! The micro-batches per rank `sftctl plan` shows for each grid point: the run's data tokenized
//! with the model's tokenizer and fed through `sftctl-data`'s sampler and packer for the world
//! size, exactly as the ranks will draw them. Large files are sampled (see [`SAMPLE_BYTES`]).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use sftctl_data::pack::{BatchConfig, SampleInfo, Sampler, Source, TailPolicy};
use sftctl_data::samples::{TokenizeOptions, tokenize_jsonl};
use sftctl_data::tokenizer::ChatTokenizer;

use crate::plan::{Plan, PlannedRun};

/// A data file larger than this is represented by its first lines up to this many bytes: the
/// plan tokenizes on the login node, and the range is a property of the length distribution.
pub const SAMPLE_BYTES: u64 = 8 << 20;

/// Steps simulated per run at most (the range rarely widens after the first epoch).
pub const MAX_STEPS: u64 = 2000;

/// Fewest and most micro-batches one rank gets in one optimizer step of one phase of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatchRange {
    pub min: u64,
    pub max: u64,
    /// Steps simulated.
    pub steps: u64,
    /// True when a data file was sampled ([`SAMPLE_BYTES`]).
    pub sampled: bool,
}

/// Data and tokenizer could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(String);

/// The range of each phase of a run, in phase order (one entry, phase 0, for an unphased run):
/// every phase packs its own data sets with a fresh sampler, as the trainer does.
pub type PhaseRanges = Vec<(u32, MicroBatchRange)>;

/// The ranges of every run of `plan` (indexed like `plan.runs`).
pub fn ranges(plan: &Plan) -> Result<Vec<PhaseRanges>, RangeError> {
    let world = (plan.spec.slurm.nodes * plan.spec.slurm.ranks_per_node) as usize;
    let mut tokenizers = Tokenizers::new();
    let mut files = Files::new();
    let tmp = tempfile::tempdir().map_err(|e| RangeError(format!("temporary directory: {e}")))?;
    plan.runs
        .iter()
        .map(|r| {
            r.scripts
                .iter()
                .map(|(phase, _)| {
                    range(r, *phase, world, &mut tokenizers, &mut files, tmp.path())
                        .map(|m| (*phase, m))
                })
                .collect()
        })
        .collect()
}

/// Fewest and most over all phases of a run (steps summed).
pub fn overall(phases: &[(u32, MicroBatchRange)]) -> Option<MicroBatchRange> {
    phases
        .iter()
        .map(|(_, m)| *m)
        .reduce(|a, b| MicroBatchRange {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            steps: a.steps + b.steps,
            sampled: a.sampled || b.sampled,
        })
}

type Tokenizers = HashMap<PathBuf, (ChatTokenizer, sftctl_data::chat::ChatTemplate)>;
type Files = HashMap<(PathBuf, PathBuf, usize), (Vec<SampleInfo>, bool)>;

fn range(
    run: &PlannedRun,
    phase: u32,
    world: usize,
    tokenizers: &mut Tokenizers,
    files: &mut Files,
    tmp: &Path,
) -> Result<MicroBatchRange, RangeError> {
    let c = &run.config;
    let t = &c["train"];
    let num = |k: &str, d: u64| t[k].as_u64().unwrap_or(d);
    let max_len = num("max_seq_len", 2048) as usize;
    let budget = match num("token_budget_per_gpu", 0) {
        0 => num("micro_batch_size", 1) * max_len as u64,
        b => b,
    } as usize;
    let batch_size = num("batch_size", 8);
    let model = PathBuf::from(c["model"]["path"].as_str().unwrap_or_default());
    if !tokenizers.contains_key(&model) {
        let tok = ChatTokenizer::from_dir(&model)
            .map_err(|e| RangeError(format!("tokenizer of `{}`: {e}", model.display())))?;
        let template = tok
            .chat_template(None)
            .map_err(|e| RangeError(format!("chat template of `{}`: {e}", model.display())))?;
        tokenizers.insert(model.clone(), (tok, template));
    }
    let (tok, template) = &tokenizers[&model];
    let mut sources = Vec::new();
    let mut sampled = false;
    for d in c["data"].as_array().into_iter().flatten() {
        let dphase = d["phase"].as_u64();
        if !(phase == 0 || dphase.is_none() || dphase == Some(u64::from(phase))) {
            continue;
        }
        let path = PathBuf::from(d["path"].as_str().unwrap_or_default());
        let key = (model.clone(), path.clone(), max_len);
        if !files.contains_key(&key) {
            let (input, cut) = sample_of(&path, tmp)?;
            let opts = TokenizeOptions {
                max_len,
                skip_malformed: true,
            };
            let file = tokenize_jsonl(&input, tok, template, &opts)
                .map_err(|e| RangeError(format!("data `{}`: {e}", path.display())))?;
            let infos = file
                .samples
                .iter()
                .map(|s| SampleInfo {
                    len: s.len() as u32,
                    loss_tokens: s.loss_mask.iter().skip(1).filter(|&&m| m).count() as u32,
                })
                .collect();
            files.insert(key.clone(), (infos, cut));
        }
        let (samples, cut) = &files[&key];
        sampled |= *cut;
        sources.push(Source {
            name: d["name"].as_str().unwrap_or_default().to_owned(),
            samples: samples.clone(),
            weight: 1.0,
        });
    }
    let config = BatchConfig {
        batch_size: batch_size as usize,
        world_size: world,
        token_budget: budget,
        seed: num("seed", 0),
        tail: TailPolicy::Continue,
    };
    let mut sampler =
        Sampler::new(config, sources).map_err(|e| RangeError(format!("run `{}`: {e}", run.id)))?;
    let epochs = t["epochs"].as_f64().unwrap_or(1.0);
    let mut steps = ((epochs * sampler.epoch_len() as f64) / batch_size as f64).ceil() as u64;
    if let Some(m) = t["max_steps"].as_u64().filter(|&m| m > 0) {
        steps = steps.min(m);
    }
    let steps = steps.clamp(1, MAX_STEPS);
    let (mut min, mut max) = (u64::MAX, 0);
    for _ in 0..steps {
        let step = sampler.next_step();
        for r in &step.ranks {
            let n = r.micro_batches.len() as u64;
            min = min.min(n);
            max = max.max(n);
        }
    }
    Ok(MicroBatchRange {
        min,
        max,
        steps,
        sampled,
    })
}

/// `path` itself, or its first lines up to [`SAMPLE_BYTES`] in a file under `tmp`.
fn sample_of(path: &Path, tmp: &Path) -> Result<(PathBuf, bool), RangeError> {
    let err = |e: std::io::Error| RangeError(format!("data `{}`: {e}", path.display()));
    let size = fs_err::metadata(path).map_err(err)?.len();
    if size <= SAMPLE_BYTES {
        return Ok((path.to_owned(), false));
    }
    let name = sha2::Sha256::digest(path.to_string_lossy().as_bytes());
    let out_path = tmp.join(format!("{}.jsonl", hex::encode(name)));
    let mut out = std::io::BufWriter::new(fs_err::File::create(&out_path).map_err(err)?);
    let mut written = 0u64;
    for line in std::io::BufReader::new(fs_err::File::open(path).map_err(err)?).lines() {
        let line = line.map_err(err)?;
        written += line.len() as u64 + 1;
        if written > SAMPLE_BYTES {
            break;
        }
        writeln!(out, "{line}").map_err(err)?;
    }
    out.flush().map_err(err)?;
    Ok((out_path, true))
}
