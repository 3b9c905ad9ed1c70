//! The sweep spec (TOML): its schema, and the checks that turn a file into a [`Spec`] or an error
//! pointing at `file:line:col`. Unknown keys, wrong types and impossible values are errors.

use crate::quote::is_plain_word;
use serde::Deserialize;
use sftctl_ledger::evals::{EvalCheckpoints, EvalKind, EvalPlacement, EvalSpec, check_eval_name};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// An error in a spec, located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Maps byte offsets of a spec file to `line:col`.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// An error at byte `span.start`.
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> SpecError {
        let at = span.map_or(0, |s| s.start.min(self.text.len()));
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SpecError {
            file: self.path.display().to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// The file as written; every section rejects unknown keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub sweep: RawSweep,
    pub model: RawModel,
    #[serde(default)]
    pub data: Vec<RawData>,
    #[serde(default)]
    pub train: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub grid: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    pub slurm: RawSlurm,
    #[serde(default)]
    pub env: RawEnv,
    #[serde(default)]
    pub run: RawRun,
    /// `[[eval]]`: the evaluations of every run (docs/results.md).
    #[serde(default)]
    pub eval: Vec<RawEval>,
}

/// One `[[eval]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEval {
    pub name: Spanned<String>,
    /// `mmlu` (the built-in scorer) or `command`.
    pub kind: Spanned<String>,
    /// `mmlu`: directory with `dev.jsonl` and `test.jsonl`, relative to the spec file.
    pub data: Option<Spanned<String>>,
    /// `command`: an argv with `{model}`, `{output}`, `{step}`, `{run_dir}`, `{name}`.
    pub command: Option<Spanned<Vec<String>>>,
    /// `all` or `final` (default).
    pub checkpoints: Option<Spanned<String>>,
    /// `eval-job` (default: its own job after training) or `training-job` (built-in only).
    #[serde(rename = "where")]
    pub placement: Option<Spanned<String>>,
    pub shots: Option<Spanned<i64>>,
    pub max_length: Option<Spanned<i64>>,
    pub add_special_tokens: Option<Spanned<bool>>,
    pub backend: Option<Spanned<String>>,
    pub all_tasks: Option<Spanned<bool>>,
    /// `[eval.slurm]`: the evaluation job's resources (default: the sweep's `[slurm]`, at most
    /// one GPU).
    pub slurm: Option<Spanned<RawEvalSlurm>>,
}

/// `[eval.slurm]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvalSlurm {
    pub partition: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    pub qos: Option<Spanned<String>>,
    pub constraint: Option<Spanned<String>>,
    pub mem: Option<Spanned<String>>,
    pub time: Option<Spanned<String>>,
    pub gpus_per_node: Option<Spanned<i64>>,
    pub cpus_per_task: Option<Spanned<i64>>,
    #[serde(default)]
    pub extra: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    pub name: Spanned<String>,
    /// Ledger root, relative to the spec file's directory.
    #[serde(default)]
    pub ledger: Option<String>,
    #[serde(default)]
    pub executor: Option<Spanned<String>>,
    /// Concurrent jobs with the local executor.
    #[serde(default)]
    pub max_parallel: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub name: String,
    pub path: String,
    /// Phase (1, 2, …) of a phased run; data sets without a phase belong to every phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlurm {
    pub partition: Option<Spanned<String>>,
    pub account: Option<Spanned<String>>,
    pub qos: Option<Spanned<String>>,
    pub constraint: Option<Spanned<String>>,
    pub mem: Option<Spanned<String>>,
    pub time: Option<Spanned<String>>,
    pub nodes: Option<Spanned<i64>>,
    pub gpus_per_node: Option<Spanned<i64>>,
    /// Ranks (processes) per node of a CPU run (default 1); a GPU run has one per GPU.
    pub ranks_per_node: Option<Spanned<i64>>,
    pub cpus_per_task: Option<Spanned<i64>>,
    /// Extra `#SBATCH` options, e.g. `["--exclusive"]`.
    #[serde(default)]
    pub extra: Vec<Spanned<String>>,
    /// Submit runs that share resources as job arrays (default true).
    pub array: Option<bool>,
    /// `%` throttle of arrays: at most this many tasks at once (0: no limit).
    pub array_throttle: Option<Spanned<i64>>,
    /// `--signal=B:USR1@<s>`: seconds of warning before the time limit.
    pub signal_seconds: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnv {
    #[serde(default)]
    pub modules: Vec<String>,
    pub venv: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<Spanned<String>, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    /// The job's command as an argv; `{binary}`, `{run_dir}`, `{config}`, `{phase}` are replaced.
    pub command: Option<Spanned<Vec<String>>>,
    /// The runtime binary: copied into the ledger under its hash at submit time.
    pub binary: Option<String>,
    /// A minijinja template replacing `templates/job.sh.j2`, relative to the spec file.
    pub template: Option<Spanned<String>>,
    /// A minijinja template replacing `templates/eval.sh.j2` (evaluation jobs).
    pub eval_template: Option<Spanned<String>>,
    /// Seconds without a heartbeat after which a running job shows as stalled.
    pub stale_after_s: Option<Spanned<i64>>,
}

/// The type and range of a training hyperparameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Integer >= 1.
    PosInt,
    /// Integer >= 0.
    NonNegInt,
    /// Number > 0.
    PosFloat,
    /// Number >= 0.
    NonNegFloat,
    /// Number in [0, 1).
    Fraction,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// A default value of a hyperparameter.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    Int(i64),
    Float(f64),
    Str(&'static str),
}

/// Every training hyperparameter a spec may set in `[train]` or vary in `[grid]`, its type and
/// its default. Adding a key with a default keeps existing run ids (see `identity`).
pub const TRAIN_KEYS: &[(&str, Kind, Default, &str)] = &[
    (
        "batch_size",
        Kind::PosInt,
        Default::Int(8),
        "effective batch size in samples",
    ),
    (
        "micro_batch_size",
        Kind::PosInt,
        Default::Int(1),
        "samples per forward pass per GPU",
    ),
    (
        "lr",
        Kind::PosFloat,
        Default::Float(2e-5),
        "peak learning rate",
    ),
    (
        "min_lr_ratio",
        Kind::NonNegFloat,
        Default::Float(0.0),
        "final lr / peak lr",
    ),
    (
        "warmup_steps",
        Kind::NonNegInt,
        Default::Int(0),
        "linear warmup steps",
    ),
    (
        "schedule",
        Kind::OneOf(&["constant", "linear", "cosine"]),
        Default::Str("cosine"),
        "lr schedule",
    ),
    (
        "strategy",
        Kind::OneOf(&["stacked", "phased"]),
        Default::Str("stacked"),
        "mix data sets, or train them in phases",
    ),
    ("seed", Kind::NonNegInt, Default::Int(0), "random seed"),
    (
        "epochs",
        Kind::PosFloat,
        Default::Float(1.0),
        "passes over the data",
    ),
    (
        "max_steps",
        Kind::NonNegInt,
        Default::Int(0),
        "stop after this many steps (0: no limit)",
    ),
    (
        "token_budget_per_gpu",
        Kind::NonNegInt,
        Default::Int(0),
        "tokens per GPU per micro-batch (0: by micro_batch_size)",
    ),
    (
        "max_seq_len",
        Kind::PosInt,
        Default::Int(2048),
        "longest packed sequence",
    ),
    (
        "weight_decay",
        Kind::NonNegFloat,
        Default::Float(0.0),
        "AdamW weight decay",
    ),
    (
        "adam_beta1",
        Kind::Fraction,
        Default::Float(0.9),
        "AdamW first-moment decay",
    ),
    (
        "adam_beta2",
        Kind::Fraction,
        Default::Float(0.95),
        "AdamW second-moment decay",
    ),
    (
        "adam_epsilon",
        Kind::PosFloat,
        Default::Float(1e-8),
        "AdamW epsilon, added to the root of the second moment",
    ),
    (
        "grad_clip",
        Kind::NonNegFloat,
        Default::Float(1.0),
        "gradient norm clip (0: off)",
    ),
    (
        "checkpoint_every",
        Kind::NonNegInt,
        Default::Int(0),
        "steps between checkpoints (0: at the end)",
    ),
    (
        "checkpoint_every_samples",
        Kind::NonNegInt,
        Default::Int(0),
        "samples between checkpoints, whatever the batch size (0: use checkpoint_every)",
    ),
    (
        "eval_every",
        Kind::NonNegInt,
        Default::Int(0),
        "steps between evaluations (0: at the end)",
    ),
    (
        "ce_chunk_tokens",
        Kind::NonNegInt,
        Default::Int(0),
        "loss tokens per cross-entropy chunk (0: whole micro-batch)",
    ),
    (
        "activation_checkpointing",
        Kind::OneOf(&["none", "blocks"]),
        Default::Str("none"),
        "recompute each decoder block in backward",
    ),
    (
        "attention",
        Kind::OneOf(&["auto", "plain"]),
        Default::Str("auto"),
        "libtorch's fused attention kernels on the tch backend (auto), or the decomposed path",
    ),
    (
        "phase_init",
        Kind::OneOf(&["final", "best-val-loss"]),
        Default::Str("final"),
        "phase k starts from phase k-1's final checkpoint or its best by validation loss",
    ),
    (
        "optimizer_sharding",
        Kind::OneOf(&["none", "zero1"]),
        Default::Str("none"),
        "AdamW state on every rank, or sharded across data-parallel ranks (ZeRO stage 1)",
    ),
    (
        "precision",
        Kind::OneOf(&["fp32", "bf16"]),
        Default::Str("fp32"),
        "fp32, or bf16 compute with fp32 master weights and AdamW moments",
    ),
];

/// Looks up a hyperparameter.
pub fn train_key(name: &str) -> Option<(Kind, Default)> {
    TRAIN_KEYS
        .iter()
        .find(|(k, ..)| *k == name)
        .map(|(_, kind, d, _)| (*kind, *d))
}

/// A checked hyperparameter value, canonical: an integer-valued key holds an integer, a float
/// key holds an `f64` (so `2e-5` and `0.00002` are the same value).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Val {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Val::Int(i) => (*i).into(),
            Val::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Val::Str(s) => s.clone().into(),
        }
    }
    /// Short text for names and tables: `2e-5`, `16`, `cosine`.
    pub fn short(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Float(f) => format!("{f:?}").replace("e-0", "e-").replace(".0e", "e"),
            Val::Str(s) => s.clone(),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Str(_) => None,
        }
    }
}

impl From<Default> for Val {
    fn from(d: Default) -> Self {
        match d {
            Default::Int(i) => Val::Int(i),
            Default::Float(f) => Val::Float(f),
            Default::Str(s) => Val::Str(s.to_owned()),
        }
    }
}

/// Checks `v` against key `key`'s kind; the error message names both.
pub fn check_value(key: &str, v: &toml::Value) -> Result<Val, String> {
    let (kind, _) = train_key(key).ok_or_else(|| {
        let known: Vec<&str> = TRAIN_KEYS.iter().map(|k| k.0).collect();
        format!(
            "unknown hyperparameter `{key}`\nhint: known ones are {}",
            known.join(", ")
        )
    })?;
    let num = || match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    };
    let type_err = |want: &str| format!("`{key}` must be {want}, got {} `{v}`", v.type_str());
    match kind {
        Kind::PosInt | Kind::NonNegInt => {
            let toml::Value::Integer(i) = v else {
                return Err(type_err("an integer"));
            };
            let min = if kind == Kind::PosInt { 1 } else { 0 };
            if *i < min {
                return Err(format!("`{key}` must be >= {min}, got `{i}`"));
            }
            Ok(Val::Int(*i))
        }
        Kind::PosFloat | Kind::NonNegFloat | Kind::Fraction => {
            let f = num().ok_or_else(|| type_err("a number"))?;
            if !f.is_finite() {
                return Err(format!("`{key}` must be finite, got `{v}`"));
            }
            if kind == Kind::Fraction && !(0.0..1.0).contains(&f) {
                return Err(format!("`{key}` must be >= 0 and < 1, got `{v}`"));
            }
            if kind == Kind::PosFloat && f <= 0.0 {
                return Err(format!("`{key}` must be > 0, got `{v}`"));
            }
            if kind == Kind::NonNegFloat && f < 0.0 {
                return Err(format!("`{key}` must be >= 0, got `{v}`"));
            }
            Ok(Val::Float(f))
        }
        Kind::OneOf(options) => {
            let toml::Value::String(s) = v else {
                return Err(type_err("a string"));
            };
            if !options.contains(&s.as_str()) {
                return Err(format!(
                    "`{key}` must be one of {}, got `{s}`",
                    options.join(", ")
                ));
            }
            Ok(Val::Str(s.clone()))
        }
    }
}

/// Slurm resources, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub mem: Option<String>,
    pub time: String,
    pub time_s: u64,
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// Ranks per node: `gpus_per_node` on GPUs, else `ranks_per_node` (default 1).
    pub ranks_per_node: u32,
    pub cpus_per_task: u32,
    pub extra: Vec<String>,
    pub array: bool,
    pub array_throttle: u32,
    /// `--signal` lead time; `None`: derived from measured step and checkpoint times
    /// (cli/src/lead.rs).
    pub signal_seconds: Option<u32>,
}

/// Environment set-up in the allocation, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvSpec {
    pub modules: Vec<String>,
    pub venv: Option<String>,
    pub vars: Vec<(String, String)>,
}

/// Resources of an evaluation job, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSlurm {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub mem: Option<String>,
    pub time: String,
    pub gpus_per_node: u32,
    pub cpus_per_task: u32,
    pub extra: Vec<String>,
}

/// One checked `[[eval]]`: what goes into `config.json`, and its job's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalEntry {
    pub spec: EvalSpec,
    pub slurm: EvalSlurm,
}

/// Placeholders a `command` evaluation may use.
pub const EVAL_PLACEHOLDERS: &[&str] = &["model", "output", "step", "run_dir", "name"];

/// A checked spec. The grid stays as parsed values with their spans; `grid::expand` checks it.
#[derive(Debug)]
pub struct Spec {
    pub source: Source,
    pub dir: PathBuf,
    pub name: String,
    pub ledger: PathBuf,
    pub executor: Option<String>,
    pub max_parallel: usize,
    pub model_path: String,
    pub data: Vec<RawData>,
    /// Base values written in `[train]`.
    pub train: BTreeMap<String, Val>,
    pub grid: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    pub slurm: SlurmSpec,
    pub env: EnvSpec,
    pub command: Vec<String>,
    pub binary: Option<String>,
    pub template: Option<PathBuf>,
    pub stale_after_s: u64,
    /// The evaluations of every run, in spec order.
    pub evals: Vec<EvalEntry>,
    pub eval_template: Option<PathBuf>,
}

/// Parses a Slurm `--time` (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`) to
/// seconds.
pub fn parse_time(t: &str) -> Option<u64> {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, t),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let s = match (t.contains('-'), parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86400 + s)
}

impl Spec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = fs_err::read_to_string(path).map_err(|e| SpecError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            message: e.to_string(),
        })?;
        Self::parse(path, text)
    }

    /// Checks spec `text` read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Spec, SpecError> {
        let source = Source {
            path: path.to_owned(),
            text,
        };
        let raw: RawSpec = toml::from_str(&source.text)
            .map_err(|e| source.error(e.span(), e.message().trim().to_owned()))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let err = |span: Range<usize>, m: String| source.error(Some(span), m);

        let name = raw.sweep.name.get_ref().clone();
        if !is_plain_word(&name) || name.contains('/') || name.starts_with('.') {
            return Err(err(
                raw.sweep.name.span(),
                format!("sweep name `{name}` may hold only letters, digits and `_-.,:=@%+`"),
            ));
        }
        let executor = match &raw.sweep.executor {
            Some(e) if !["slurm", "local"].contains(&e.get_ref().as_str()) => {
                return Err(err(
                    e.span(),
                    format!(
                        "`executor` must be `slurm` or `local`, got `{}`",
                        e.get_ref()
                    ),
                ));
            }
            e => e.as_ref().map(|e| e.get_ref().clone()),
        };
        let pos = |v: &Option<Spanned<i64>>,
                   key: &str,
                   default: i64,
                   min: i64|
         -> Result<i64, SpecError> {
            match v {
                None => Ok(default),
                Some(s) if *s.get_ref() < min => Err(err(
                    s.span(),
                    format!("`{key}` must be >= {min}, got `{}`", s.get_ref()),
                )),
                Some(s) => Ok(*s.get_ref()),
            }
        };
        let max_parallel = pos(&raw.sweep.max_parallel, "max_parallel", 1, 1)? as usize;

        let mut train = BTreeMap::new();
        for (k, v) in &raw.train {
            let val = check_value(k, v.get_ref()).map_err(|m| err(v.span(), m))?;
            train.insert(k.clone(), val);
        }

        let word = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, SpecError> {
            match v {
                Some(s) if !is_plain_word(s.get_ref()) => Err(err(
                    s.span(),
                    format!(
                        "`slurm.{key}` = `{}` may hold only letters, digits and `_-.,:=@%/+[]`",
                        s.get_ref()
                    ),
                )),
                v => Ok(v.as_ref().map(|s| s.get_ref().clone())),
            }
        };
        let s = &raw.slurm;
        let time = s
            .time
            .as_ref()
            .map_or_else(|| "01:00:00".to_owned(), |t| t.get_ref().clone());
        let time_s = parse_time(&time).filter(|&t| t > 0).ok_or_else(|| {
            source.error(s.time.as_ref().map(Spanned::span), format!("`slurm.time` = `{time}` is not a Slurm time limit (e.g. `30`, `01:30:00`, `2-00:00:00`)"))
        })?;
        let extra = check_extra(&source, &s.extra, "slurm.extra")?;
        let gpus_per_node = pos(&s.gpus_per_node, "gpus_per_node", 0, 0)? as u32;
        let ranks_per_node = match &s.ranks_per_node {
            Some(r) if gpus_per_node > 0 && *r.get_ref() != i64::from(gpus_per_node) => {
                return Err(err(
                    r.span(),
                    format!(
                        "`slurm.ranks_per_node` = {} but a GPU run has one rank per GPU ({gpus_per_node}); leave it out",
                        r.get_ref()
                    ),
                ));
            }
            _ if gpus_per_node > 0 => gpus_per_node,
            _ => pos(&s.ranks_per_node, "ranks_per_node", 1, 1)? as u32,
        };
        let slurm = SlurmSpec {
            partition: word(&s.partition, "partition")?,
            account: word(&s.account, "account")?,
            qos: word(&s.qos, "qos")?,
            constraint: word(&s.constraint, "constraint")?,
            mem: word(&s.mem, "mem")?,
            time,
            time_s,
            nodes: pos(&s.nodes, "nodes", 1, 1)? as u32,
            gpus_per_node,
            ranks_per_node,
            cpus_per_task: pos(&s.cpus_per_task, "cpus_per_task", 1, 1)? as u32,
            extra,
            array: s.array.unwrap_or(true),
            array_throttle: pos(&s.array_throttle, "array_throttle", 0, 0)? as u32,
            signal_seconds: match &s.signal_seconds {
                Some(_) => Some(pos(&s.signal_seconds, "signal_seconds", 0, 0)? as u32),
                None => None,
            },
        };

        let mut vars = Vec::new();
        for (k, v) in &raw.env.vars {
            let key = k.get_ref();
            let ident = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident {
                return Err(err(
                    k.span(),
                    format!("`env.vars` key `{key}` is not a shell variable name"),
                ));
            }
            vars.push((key.clone(), v.clone()));
        }
        let env = EnvSpec {
            modules: raw.env.modules.clone(),
            venv: raw.env.venv.clone(),
            vars,
        };

        let command = match &raw.run.command {
            Some(c) if c.get_ref().is_empty() => {
                return Err(err(c.span(), "`run.command` must not be empty".into()));
            }
            Some(c) => c.get_ref().clone(),
            None => vec!["{binary}".into(), "run".into(), "{run_dir}".into()],
        };
        let evals = check_evals(&source, &dir, &raw.eval, &slurm)?;
        // Evaluation jobs run the runtime binary whatever the training command is.
        let eval_jobs = evals
            .iter()
            .any(|e| e.spec.placement == EvalPlacement::EvalJob);
        let binary = match (
            &raw.run.binary,
            eval_jobs || command.iter().any(|a| a.contains("{binary}")),
        ) {
            (Some(b), _) => Some(b.clone()),
            (None, true) => Some("sftctl-train".into()),
            (None, false) => None,
        };
        for d in &raw.data {
            if d.phase == Some(0) {
                return Err(
                    source.error(None, format!("data set `{}`: `phase` starts at 1", d.name))
                );
            }
        }

        Ok(Spec {
            dir: dir.clone(),
            ledger: dir.join(raw.sweep.ledger.as_deref().unwrap_or("ledger")),
            name,
            executor,
            max_parallel,
            model_path: raw.model.path.clone(),
            data: raw.data.clone(),
            train,
            grid: raw.grid,
            slurm,
            env,
            command,
            binary,
            template: raw.run.template.as_ref().map(|t| dir.join(t.get_ref())),
            stale_after_s: pos(&raw.run.stale_after_s, "stale_after_s", 600, 1)? as u64,
            evals,
            eval_template: raw
                .run
                .eval_template
                .as_ref()
                .map(|t| dir.join(t.get_ref())),
            source,
        })
    }
}

/// The `{word}` placeholders in `s`.
fn placeholders(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        if let Some(j) = rest.find('}') {
            let w = &rest[..j];
            if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push(w);
            }
        }
    }
    out
}

/// Checks the `[[eval]]` tables.
/// Extra `#SBATCH` lines (`key` names them in errors): each one `--option[=value]` of plain
/// characters, so nothing can break out of the directive.
fn check_extra(
    source: &Source,
    extra: &[Spanned<String>],
    key: &str,
) -> Result<Vec<String>, SpecError> {
    extra
        .iter()
        .map(|x| {
            let line = x.get_ref();
            let ok = line.starts_with("--")
                && line.split_once('=').map_or(is_plain_word(line), |(k, v)| {
                    is_plain_word(k) && is_plain_word(v)
                });
            if ok {
                Ok(line.clone())
            } else {
                Err(source.error(
                    Some(x.span()),
                    format!(
                        "`{key}` entry `{line}` must be one `--option[=value]` of plain characters"
                    ),
                ))
            }
        })
        .collect()
}

fn check_evals(
    source: &Source,
    dir: &Path,
    raw: &[RawEval],
    slurm: &SlurmSpec,
) -> Result<Vec<EvalEntry>, SpecError> {
    let err = |span: Range<usize>, m: String| source.error(Some(span), m);
    let mut out: Vec<EvalEntry> = Vec::new();
    for e in raw {
        let name = e.name.get_ref();
        check_eval_name(name).map_err(|m| err(e.name.span(), m))?;
        if out.iter().any(|o| o.spec.name == *name) {
            return Err(err(
                e.name.span(),
                format!("evaluation `{name}` is defined twice"),
            ));
        }
        let kind_span = e.kind.span();
        let only = |present: bool, span: Option<Range<usize>>, key: &str, kind: &str| match (
            present, span,
        ) {
            (true, Some(s)) => Err(err(
                s,
                format!("`{key}` does not apply to an evaluation of `kind = \"{kind}\"`"),
            )),
            _ => Ok(()),
        };
        let kind = match e.kind.get_ref().as_str() {
            "mmlu" => {
                let data = e.data.as_ref().ok_or_else(|| {
                    err(
                        kind_span.clone(),
                        format!("evaluation `{name}`: `kind = \"mmlu\"` needs `data` (a directory with dev.jsonl and test.jsonl)"),
                    )
                })?;
                only(
                    true,
                    e.command.as_ref().map(Spanned::span),
                    "command",
                    "mmlu",
                )?;
                only(
                    true,
                    e.all_tasks.as_ref().map(Spanned::span),
                    "all_tasks",
                    "mmlu",
                )?;
                let shots = match &e.shots {
                    Some(s) if *s.get_ref() < 0 => {
                        return Err(err(
                            s.span(),
                            format!("`shots` must be >= 0, got `{}`", s.get_ref()),
                        ));
                    }
                    Some(s) => *s.get_ref() as usize,
                    None => 5,
                };
                let max_length = match &e.max_length {
                    Some(s) if *s.get_ref() < 1 => {
                        return Err(err(
                            s.span(),
                            format!("`max_length` must be >= 1, got `{}`", s.get_ref()),
                        ));
                    }
                    s => s.as_ref().map(|s| *s.get_ref() as usize),
                };
                let backend = match &e.backend {
                    Some(b) => {
                        let v = b.get_ref();
                        let ok = v == "flex"
                            || v == "tch-cpu"
                            || v.strip_prefix("cuda:")
                                .is_some_and(|n| n.parse::<u32>().is_ok());
                        if !ok {
                            return Err(err(
                                b.span(),
                                format!(
                                    "`backend` must be `flex`, `tch-cpu` or `cuda:N`, got `{v}`"
                                ),
                            ));
                        }
                        Some(v.clone())
                    }
                    None => None,
                };
                let joined = dir.join(data.get_ref());
                EvalKind::Mmlu {
                    data: std::path::absolute(&joined)
                        .unwrap_or(joined)
                        .to_string_lossy()
                        .into_owned(),
                    shots,
                    max_length,
                    add_special_tokens: e.add_special_tokens.as_ref().is_some_and(|b| *b.get_ref()),
                    backend,
                }
            }
            "command" => {
                let command = e.command.as_ref().ok_or_else(|| {
                    err(
                        kind_span.clone(),
                        format!("evaluation `{name}`: `kind = \"command\"` needs `command` (an argv with `{{model}}` and `{{output}}`)"),
                    )
                })?;
                for (present, span, key) in [
                    (e.data.is_some(), e.data.as_ref().map(Spanned::span), "data"),
                    (
                        e.shots.is_some(),
                        e.shots.as_ref().map(Spanned::span),
                        "shots",
                    ),
                    (
                        e.max_length.is_some(),
                        e.max_length.as_ref().map(Spanned::span),
                        "max_length",
                    ),
                    (
                        e.add_special_tokens.is_some(),
                        e.add_special_tokens.as_ref().map(Spanned::span),
                        "add_special_tokens",
                    ),
                    (
                        e.backend.is_some(),
                        e.backend.as_ref().map(Spanned::span),
                        "backend",
                    ),
                ] {
                    only(present, span, key, "command")?;
                }
                let argv = command.get_ref();
                if argv.is_empty() {
                    return Err(err(command.span(), "`command` must not be empty".into()));
                }
                let used: Vec<&str> = argv.iter().flat_map(|w| placeholders(w)).collect();
                if let Some(bad) = used.iter().find(|p| !EVAL_PLACEHOLDERS.contains(p)) {
                    return Err(err(
                        command.span(),
                        format!(
                            "unknown placeholder `{{{bad}}}` in `command`\nhint: known ones are {}",
                            EVAL_PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                for need in ["model", "output"] {
                    if !used.contains(&need) {
                        return Err(err(
                            command.span(),
                            format!(
                                "`command` must contain `{{{need}}}` (the checkpoint's model directory and the JSON file it writes)"
                            ),
                        ));
                    }
                }
                // A program given by a relative path (`eval/lm-eval.sh`) is found from the spec's
                // directory, as `data` is; a bare name (`lm_eval`) is looked up on PATH.
                let mut argv = argv.clone();
                if argv[0].contains('/') && Path::new(&argv[0]).is_relative() {
                    let joined = dir.join(&argv[0]);
                    argv[0] = std::path::absolute(&joined)
                        .unwrap_or(joined)
                        .to_string_lossy()
                        .into_owned();
                }
                EvalKind::Command {
                    command: argv,
                    all_tasks: e.all_tasks.as_ref().is_some_and(|b| *b.get_ref()),
                }
            }
            other => {
                return Err(err(
                    kind_span,
                    format!("`kind` must be `mmlu` or `command`, got `{other}`"),
                ));
            }
        };
        let checkpoints = match e
            .checkpoints
            .as_ref()
            .map(|c| (c.get_ref().as_str(), c.span()))
        {
            None | Some(("final", _)) => EvalCheckpoints::Final,
            Some(("all", _)) => EvalCheckpoints::All,
            Some((other, span)) => {
                return Err(err(
                    span,
                    format!("`checkpoints` must be `all` or `final`, got `{other}`"),
                ));
            }
        };
        let placement = match e
            .placement
            .as_ref()
            .map(|c| (c.get_ref().as_str(), c.span()))
        {
            None | Some(("eval-job", _)) => EvalPlacement::EvalJob,
            Some(("training-job", span)) => {
                if matches!(kind, EvalKind::Command { .. }) {
                    return Err(err(span, "`where = \"training-job\"` runs only the built-in `kind = \"mmlu\"`; a command evaluation runs as its own job".into()));
                }
                if let Some(s) = &e.slurm {
                    return Err(err(s.span(), "`[eval.slurm]` applies to evaluation jobs; this evaluation runs inside the training job (`where = \"training-job\"`)".into()));
                }
                EvalPlacement::TrainingJob
            }
            Some((other, span)) => {
                return Err(err(
                    span,
                    format!("`where` must be `eval-job` or `training-job`, got `{other}`"),
                ));
            }
        };
        let default = RawEvalSlurm::default();
        let rs = e.slurm.as_ref().map_or(&default, |s| s.get_ref());
        let word = |v: &Option<Spanned<String>>,
                    key: &str,
                    inherit: &Option<String>|
         -> Result<Option<String>, SpecError> {
            match v {
                Some(s) if !is_plain_word(s.get_ref()) => Err(err(
                    s.span(),
                    format!(
                        "`eval.slurm.{key}` = `{}` may hold only letters, digits and `_-.,:=@%/+[]`",
                        s.get_ref()
                    ),
                )),
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(inherit.clone()),
            }
        };
        let time = rs
            .time
            .as_ref()
            .map_or_else(|| slurm.time.clone(), |t| t.get_ref().clone());
        if parse_time(&time).filter(|&t| t > 0).is_none() {
            return Err(source.error(
                rs.time.as_ref().map(Spanned::span),
                format!(
                    "`eval.slurm.time` = `{time}` is not a Slurm time limit (e.g. `30`, `01:30:00`)"
                ),
            ));
        }
        let int = |v: &Option<Spanned<i64>>,
                   key: &str,
                   default: u32,
                   min: i64|
         -> Result<u32, SpecError> {
            match v {
                None => Ok(default),
                Some(s) if *s.get_ref() < min || *s.get_ref() > i64::from(u32::MAX) => Err(err(
                    s.span(),
                    format!("`eval.slurm.{key}` must be >= {min}, got `{}`", s.get_ref()),
                )),
                Some(s) => Ok(*s.get_ref() as u32),
            }
        };
        let extra = check_extra(source, &rs.extra, "eval.slurm.extra")?;
        let es = EvalSlurm {
            partition: word(&rs.partition, "partition", &slurm.partition)?,
            account: word(&rs.account, "account", &slurm.account)?,
            qos: word(&rs.qos, "qos", &slurm.qos)?,
            constraint: word(&rs.constraint, "constraint", &slurm.constraint)?,
            mem: word(&rs.mem, "mem", &slurm.mem)?,
            time,
            gpus_per_node: int(
                &rs.gpus_per_node,
                "gpus_per_node",
                slurm.gpus_per_node.min(1),
                0,
            )?,
            cpus_per_task: int(&rs.cpus_per_task, "cpus_per_task", slurm.cpus_per_task, 1)?,
            extra,
        };
        let mut kind = kind;
        if let EvalKind::Mmlu { backend, .. } = &mut kind
            && backend.is_none()
            && placement == EvalPlacement::EvalJob
        {
            *backend = Some(
                if es.gpus_per_node > 0 {
                    "cuda:0"
                } else {
                    "flex"
                }
                .into(),
            );
        }
        out.push(EvalEntry {
            spec: EvalSpec {
                name: name.clone(),
                kind,
                checkpoints,
                placement,
            },
            slurm: es,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(Path::new("s.toml"), text.to_owned())
    }

    const BASE: &str = "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n";

    #[test]
    fn bad_specs_point_at_the_line() {
        let table: &[(&str, (usize, usize), &str)] = &[
            ("[sweep\nname=1", (1, 7), "expected"),
            (
                "[sweep]\nname = \"t\"\nnmae = 1\n[model]\npath = \"m\"\n",
                (3, 1),
                "unknown field `nmae`",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[train]\nlr = \"fast\"\n",
                (6, 6),
                "`lr` must be a number",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[train]\nlr = -1e-5\n",
                (6, 6),
                "`lr` must be > 0",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[train]\nbeta = 1\n",
                (6, 8),
                "unknown hyperparameter `beta`",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[train]\nadam_beta2 = 1.0\n",
                (6, 14),
                "`adam_beta2` must be >= 0 and < 1, got `1.0`",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[slurm]\nnodes = \"two\"\n",
                (6, 9),
                "invalid type",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[slurm]\npartition = \"gpu; rm -rf ~\"\n",
                (6, 13),
                "may hold only",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[slurm]\ntime = \"soon\"\n",
                (6, 8),
                "not a Slurm time",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[slurm]\ngpus_per_node = 4\nranks_per_node = 2\n",
                (7, 18),
                "one rank per GPU (4)",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[slurm]\nranks_per_node = 0\n",
                (6, 18),
                "ranks_per_node",
            ),
            (
                "[sweep]\nname = \"a b\"\n[model]\npath = \"m\"\n",
                (2, 8),
                "sweep name",
            ),
            (
                "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[train]\nschedule = \"step\"\n",
                (6, 12),
                "must be one of",
            ),
        ];
        for (text, (line, col), needle) in table {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text:?}: {e}");
            assert_eq!((e.line, e.col), (*line, *col), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("s.toml:{line}:{col}: ")));
        }
    }

    #[test]
    fn defaults_and_values() {
        let s = parse(&format!("{BASE}[train]\nlr = 2e-5\nbatch_size = 16\n")).unwrap();
        assert_eq!(s.train["lr"], Val::Float(0.00002));
        assert_eq!(s.train["batch_size"], Val::Int(16));
        assert_eq!(s.slurm.time_s, 3600);
        assert_eq!(s.slurm.ranks_per_node, 1);
        let g = parse(&format!("{BASE}[slurm]\ngpus_per_node = 4\n")).unwrap();
        assert_eq!(g.slurm.ranks_per_node, 4);
        let c = parse(&format!("{BASE}[slurm]\nnodes = 2\nranks_per_node = 3\n")).unwrap();
        assert_eq!((c.slurm.nodes, c.slurm.ranks_per_node), (2, 3));
        assert_eq!(s.command, ["{binary}", "run", "{run_dir}"]);
        assert_eq!(s.binary.as_deref(), Some("sftctl-train"));
        assert_eq!(s.ledger, Path::new("./ledger"));
    }

    #[test]
    fn eval_tables_are_checked_where_they_are_written() {
        let table: &[(&str, (usize, usize), &str)] = &[
            (
                "[[eval]]\nname = \"m\"\nkind = \"bleu\"\n",
                (7, 8),
                "`kind` must be `mmlu` or `command`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\n",
                (7, 8),
                "needs `data`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\nshots = -1\n",
                (9, 9),
                "`shots` must be >= 0",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\nbackend = \"gpu\"\n",
                (9, 11),
                "`backend` must be",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\ncommand = [\"x\"]\n",
                (9, 11),
                "`command` does not apply",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\ncheckpoints = \"best\"\n",
                (9, 15),
                "`all` or `final`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\nwhere = \"login\"\n",
                (9, 9),
                "`eval-job` or `training-job`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\nwhere = \"training-job\"\n[eval.slurm]\ncpus_per_task = 2\n",
                (10, 1),
                "applies to evaluation jobs",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\n[eval.slurm]\ngpus = 1\n",
                (10, 1),
                "unknown field `gpus`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\n[eval.slurm]\ntime = \"later\"\n",
                (10, 8),
                "not a Slurm time limit",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\n[eval.slurm]\npartition = \"a b\"\n",
                (10, 13),
                "may hold only",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"command\"\n",
                (7, 8),
                "needs `command`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"command\"\ncommand = [\"lm_eval\", \"{output}\"]\n",
                (8, 11),
                "must contain `{model}`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"command\"\ncommand = [\"x\", \"{model}\", \"{output}\", \"{ckpt}\"]\n",
                (8, 11),
                "unknown placeholder `{ckpt}`",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"command\"\ncommand = [\"x\", \"{model}\", \"{output}\"]\nshots = 5\n",
                (9, 9),
                "`shots` does not apply",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"command\"\ncommand = [\"x\", \"{model}\", \"{output}\"]\nwhere = \"training-job\"\n",
                (9, 9),
                "runs only the built-in",
            ),
            (
                "[[eval]]\nname = \"../m\"\nkind = \"mmlu\"\ndata = \"d\"\n",
                (6, 8),
                "evaluation name",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\n[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\n",
                (10, 8),
                "defined twice",
            ),
            (
                "[[eval]]\nname = \"m\"\nkind = \"mmlu\"\ndata = \"d\"\nsubjects = 3\n",
                (9, 1),
                "unknown field `subjects`",
            ),
        ];
        for (body, (line, col), needle) in table {
            let text = format!("{BASE}{body}");
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(needle), "{body:?}: {e}");
            assert_eq!((e.line, e.col), (*line, *col), "{body:?}: {e}");
        }
        let s = parse(&format!(
            "{BASE}[slurm]\ngpus_per_node = 4\npartition = \"gpu\"\n[[eval]]\nname = \"mmlu\"\nkind = \"mmlu\"\ndata = \"eval/mmlu\"\ncheckpoints = \"all\"\n[[eval]]\nname = \"lm\"\nkind = \"command\"\ncommand = [\"lm_eval\", \"--model_args\", \"pretrained={{model}}\", \"--output_path\", \"{{output}}\"]\n[eval.slurm]\ngpus_per_node = 0\ncpus_per_task = 8\ntime = \"00:30:00\"\n"
        ))
        .unwrap();
        let (m, lm) = (&s.evals[0], &s.evals[1]);
        assert_eq!(m.spec.checkpoints, EvalCheckpoints::All);
        assert_eq!(m.spec.placement, EvalPlacement::EvalJob);
        // An evaluation job takes one of the training job's GPUs, and its partition.
        assert_eq!(
            (m.slurm.gpus_per_node, m.slurm.partition.as_deref()),
            (1, Some("gpu"))
        );
        match &m.spec.kind {
            EvalKind::Mmlu {
                data,
                shots,
                backend,
                ..
            } => {
                assert!(
                    data.ends_with("/eval/mmlu") && Path::new(data).is_absolute(),
                    "{data}"
                );
                assert_eq!((*shots, backend.as_deref()), (5, Some("cuda:0")));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(lm.spec.checkpoints, EvalCheckpoints::Final);
        assert_eq!((lm.slurm.gpus_per_node, lm.slurm.cpus_per_task), (0, 8));
        assert_eq!(lm.slurm.time, "00:30:00");
        assert_eq!(s.binary.as_deref(), Some("sftctl-train"));
    }

    #[test]
    fn an_eval_program_with_a_relative_path_is_found_from_the_spec_directory() {
        let program = |argv0: &str| {
            let s = parse(&format!(
                "{BASE}[[eval]]\nname = \"lm\"\nkind = \"command\"\ncommand = [\"{argv0}\", \"{{model}}\", \"{{output}}\"]\n"
            ))
            .unwrap();
            match &s.evals[0].spec.kind {
                EvalKind::Command { command, .. } => command[0].clone(),
                k => panic!("{k:?}"),
            }
        };
        let rel = program("eval/lm-eval.sh");
        assert!(
            Path::new(&rel).is_absolute() && rel.ends_with("/eval/lm-eval.sh"),
            "{rel}"
        );
        assert_eq!(program("lm_eval"), "lm_eval");
        assert_eq!(program("/opt/x/lm_eval"), "/opt/x/lm_eval");
    }

    #[test]
    fn time_limits() {
        let table: &[(&str, Option<u64>)] = &[
            ("30", Some(1800)),
            ("10:30", Some(630)),
            ("01:00:00", Some(3600)),
            ("2-00", Some(172_800)),
            ("1-02:03", Some(93_780)),
            ("1-00:00:01", Some(86_401)),
            ("x", None),
            ("1:2:3:4", None),
        ];
        for (t, want) in table {
            assert_eq!(parse_time(t), *want, "{t}");
        }
    }
}
