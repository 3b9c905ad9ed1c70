//! Checkpoints of a run: model weights (in the model's own format, Hugging Face for the Llama),
//! Burn's AdamW state, and the loop's state (counters, sampler, random generators).
//!
//! Invariant: a checkpoint counts only once its directory has its final name *and* holds the
//! `COMPLETE` marker, which is written last, after every file and both directories were fsynced.
//! A crash at any point leaves either the previous checkpoints alone or a directory that readers
//! skip and the next writer removes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use burn::module::Module;

use crate::train::optim::{ParamEntry, param_entries, with_stable_param_ids};

/// Name of the marker that makes a checkpoint directory count.
pub const MARKER: &str = "COMPLETE";
/// Burn's AdamW state (burnpack bytes).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The loop's state.
pub const STATE_FILE: &str = "trainer_state.json";
/// Version of [`TrainState`]'s format.
pub const STATE_FORMAT: u32 = 1;

/// Reading or writing a checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error (the path is in the message).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The model's weights could not be saved or loaded.
    #[error("model weights in `{path}`: {message}")]
    Weights {
        /// The checkpoint directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Burn's optimizer record could not be encoded or decoded.
    #[error("optimizer state `{path}`: {message}")]
    Optimizer {
        /// The file.
        path: PathBuf,
        /// Burn's message.
        message: String,
    },
    /// `trainer_state.json` or the marker is unreadable.
    #[error("`{path}`: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The checkpoint was written for a model of another structure.
    #[error(
        "checkpoint `{path}` does not fit this model: {message}\nhint: resume with the model the run started with"
    )]
    Mismatch {
        /// The checkpoint directory.
        path: PathBuf,
        /// The first difference.
        message: String,
    },
}

/// How a model's weights are saved into and loaded from a checkpoint directory (Hugging Face
/// safetensors plus config and tokenizer for the Llama family).
pub trait WeightsIo<M> {
    /// Write the weights (and any config the format needs) into `dir`.
    fn save(&self, model: &M, dir: &Path) -> Result<(), String>;
    /// Load the weights written by [`WeightsIo::save`] from `dir` onto the training device.
    fn load(&self, dir: &Path) -> Result<M, String>;
}

/// The loop's state at a checkpoint: what, besides weights and moments, a resumed run needs
/// to continue exactly where the interrupted one stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// [`STATE_FORMAT`] when written.
    pub format: u32,
    /// Optimizer updates applied.
    pub step: u64,
    /// Samples trained on (across phases).
    pub samples_seen: u64,
    /// Tokens trained on (across phases).
    pub tokens_seen: u64,
    /// Epoch the sampler is in.
    pub epoch: u64,
    /// Phase of a phased run (0 for an unphased one).
    #[serde(default)]
    pub phase: u32,
    /// Step at which this phase began (its schedule counts from there).
    #[serde(default)]
    pub phase_start_step: u64,
    /// The data sampler's own state (opaque to the loop).
    pub sampler: serde_json::Value,
    /// Random-generator states (opaque to the loop).
    pub rng: serde_json::Value,
    /// The model's float parameters in the order their optimizer state is keyed by.
    pub params: Vec<ParamEntry>,
    /// Validation loss of these weights, when the loop measured it at this step.
    #[serde(default)]
    pub validation_loss: Option<f64>,
}

/// The content of the `COMPLETE` marker: the ledger's `CheckpointMarker` (docs/ledger.md)
/// plus each file's size and the time the write took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Optimizer step of the checkpoint.
    pub step: u64,
    /// Samples seen at the checkpoint.
    pub samples_seen: u64,
    /// Every file of the checkpoint, relative to its directory.
    pub files: Vec<String>,
    /// RFC 3339 time the checkpoint was sealed.
    pub written_at: String,
    /// Size in bytes of each of `files`.
    pub bytes: Vec<u64>,
    /// Seconds it took to write.
    pub write_seconds: f64,
    /// Phase of a phased run the checkpoint belongs to.
    #[serde(default)]
    pub phase: u32,
    /// Validation loss of the weights, when measured at this step (a phase can start from its
    /// predecessor's best).
    #[serde(default)]
    pub validation_loss: Option<f64>,
}

/// A complete checkpoint found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// Its directory.
    pub dir: PathBuf,
    /// Its marker.
    pub marker: Marker,
    /// Whether the optimizer state is still there (a checkpoint kept for evaluation only has
    /// its weights).
    pub resumable: bool,
}

/// The checkpoint directory of a run.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
}

/// Directory name of the checkpoint of `step` (the ledger's layout).
pub fn name_for(step: u64) -> String {
    format!("step-{step}")
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{e} (`{}`)", path.display()))
}

/// fsync a directory so that renames and creations inside it are durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Crash testing: with `SFTCTL_TEST_PAUSE_CHECKPOINT=<stage>@<step>` in the environment, the
/// writer of step `<step>`'s checkpoint announces `paused in checkpoint at <stage>` on stderr and
/// sleeps there, so a test can `kill -9` the process at a known point of the write. Stages:
/// `weights` (model written, the rest not), `renamed` (directory renamed, no marker yet).
fn test_pause(stage: &str, step: u64) {
    if std::env::var("SFTCTL_TEST_PAUSE_CHECKPOINT").is_ok_and(|s| s == format!("{stage}@{step}")) {
        eprintln!("paused in checkpoint at {stage}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs_err::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs_err::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if entry.file_type().map_err(|e| io_err(&path, e))?.is_dir() {
            list_files(&path, &format!("{name}/"), out)?;
        } else {
            out.push((name, path));
        }
    }
    Ok(())
}

impl Checkpoints {
    /// The checkpoints under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let root = root.into();
        fs_err::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The directory checkpoints live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write a checkpoint of `model`, `optimizer` and `state` and return its directory.
    ///
    /// Order: files into `.tmp-step-N`, each fsynced; the directory fsynced; renamed to
    /// `step-N`; the parent fsynced; then the marker (written to a temporary name, fsynced,
    /// renamed) and the directory fsynced again.
    pub fn write<M: Module>(
        &self,
        model: &M,
        weights: &dyn WeightsIo<M>,
        optimizer: &ModuleOptimizer,
        state: &TrainState,
    ) -> Result<CheckpointInfo, CheckpointError> {
        let started = Instant::now();
        let name = name_for(state.step);
        let tmp = self.root.join(format!(".tmp-{name}"));
        let dir = self.root.join(&name);
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp)?;
        }
        if dir.exists() {
            // Same step written before: only an incomplete one (the loop never rewrites a
            // complete checkpoint: `run::run` reuses it).
            fs_err::remove_dir_all(&dir)?;
        }
        fs_err::create_dir_all(&tmp)?;

        weights
            .save(model, &tmp)
            .map_err(|message| CheckpointError::Weights {
                path: tmp.clone(),
                message,
            })?;
        test_pause("weights", state.step);
        let opt_path = tmp.join(OPTIMIZER_FILE);
        let bytes = optimizer
            .to_record()
            .into_bytes()
            .map_err(|e| CheckpointError::Optimizer {
                path: opt_path.clone(),
                message: format!("{e:?}"),
            })?;
        write_synced(&opt_path, &bytes)?;
        let state_path = tmp.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(state).map_err(|source| CheckpointError::Json {
            path: state_path.clone(),
            source,
        })?;
        write_synced(&state_path, &json)?;

        let mut files = Vec::new();
        list_files(&tmp, "", &mut files)?;
        let mut names = Vec::new();
        let mut sizes = Vec::new();
        for (rel, path) in &files {
            let f = fs_err::File::open(path)?;
            f.sync_all()?;
            names.push(rel.clone());
            sizes.push(f.metadata()?.len());
        }
        sync_dir(&tmp)?;
        fs_err::rename(&tmp, &dir)?;
        sync_dir(&self.root)?;
        test_pause("renamed", state.step);

        let marker = Marker {
            step: state.step,
            samples_seen: state.samples_seen,
            files: names,
            written_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            bytes: sizes,
            write_seconds: started.elapsed().as_secs_f64(),
            phase: state.phase,
            validation_loss: state.validation_loss,
        };
        let marker_tmp = dir.join(format!(".{MARKER}.tmp"));
        let json = serde_json::to_vec_pretty(&marker).map_err(|source| CheckpointError::Json {
            path: marker_tmp.clone(),
            source,
        })?;
        write_synced(&marker_tmp, &json)?;
        fs_err::rename(&marker_tmp, dir.join(MARKER))?;
        sync_dir(&dir)?;
        Ok(CheckpointInfo {
            dir,
            marker,
            resumable: true,
        })
    }

    /// Every complete checkpoint, oldest first. Directories without a valid marker, or whose
    /// files do not match it, are skipped.
    pub fn complete(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("step-") {
                continue;
            }
            let dir = entry.path();
            let Ok(bytes) = fs_err::read(dir.join(MARKER)) else {
                continue;
            };
            let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else {
                continue;
            };
            let mut intact = marker.files.len() == marker.bytes.len();
            let mut resumable = false;
            for (name, &bytes) in marker.files.iter().zip(&marker.bytes) {
                match fs_err::metadata(dir.join(name)) {
                    Ok(m) if m.len() == bytes => {
                        resumable |= name == OPTIMIZER_FILE;
                    }
                    // Only the optimizer state may be missing (pruned for a kept checkpoint).
                    Err(_) if name == OPTIMIZER_FILE => {}
                    _ => intact = false,
                }
            }
            if intact {
                out.push(CheckpointInfo {
                    dir,
                    marker,
                    resumable,
                });
            }
        }
        out.sort_by_key(|c| c.marker.step);
        Ok(out)
    }

    /// The newest checkpoint a run can resume from.
    pub fn latest_resumable(&self) -> Result<Option<CheckpointInfo>, CheckpointError> {
        Ok(self.complete()?.into_iter().rev().find(|c| c.resumable))
    }

    /// Keep the newest `keep_last` resumable checkpoints whole. Of older ones, those for which
    /// `keep_weights` is true lose only their optimizer state; the rest are removed. Temporary
    /// and incomplete directories are removed too. Returns the directories changed.
    pub fn prune(
        &self,
        keep_last: usize,
        keep_weights: &dyn Fn(&CheckpointInfo) -> bool,
    ) -> Result<Vec<PathBuf>, CheckpointError> {
        let complete = self.complete()?;
        let mut changed = Vec::new();
        for entry in fs_err::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let is_tmp = name.starts_with(".tmp-");
            let incomplete = name.starts_with("step-") && !complete.iter().any(|c| c.dir == path);
            if is_tmp || incomplete {
                fs_err::remove_dir_all(&path)?;
                changed.push(path);
            }
        }
        let resumable: Vec<_> = complete.iter().filter(|c| c.resumable).collect();
        let cut = resumable.len().saturating_sub(keep_last);
        for ckpt in &resumable[..cut] {
            if keep_weights(ckpt) {
                fs_err::remove_file(ckpt.dir.join(OPTIMIZER_FILE))?;
            } else {
                // Remove the marker first so a crash half-way leaves an incomplete directory.
                fs_err::remove_file(ckpt.dir.join(MARKER))?;
                fs_err::remove_dir_all(&ckpt.dir)?;
            }
            changed.push(ckpt.dir.clone());
        }
        for ckpt in complete.iter().filter(|c| !c.resumable) {
            if !keep_weights(ckpt) {
                fs_err::remove_file(ckpt.dir.join(MARKER))?;
                fs_err::remove_dir_all(&ckpt.dir)?;
                changed.push(ckpt.dir.clone());
            }
        }
        sync_dir(&self.root)?;
        Ok(changed)
    }
}

/// The loop state stored in a checkpoint.
pub fn read_state(ckpt: &CheckpointInfo) -> Result<TrainState, CheckpointError> {
    let path = ckpt.dir.join(STATE_FILE);
    serde_json::from_slice(&fs_err::read(&path)?)
        .map_err(|source| CheckpointError::Json { path, source })
}

/// Load a resumable checkpoint: the model through `weights` (given stable parameter ids), the
/// optimizer state into a fresh `optimizer`, and the loop state.
pub fn load<M: Module>(
    ckpt: &CheckpointInfo,
    weights: &dyn WeightsIo<M>,
    optimizer: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, TrainState), CheckpointError> {
    let dir = &ckpt.dir;
    let state = read_state(ckpt)?;
    let model = weights
        .load(dir)
        .map_err(|message| CheckpointError::Weights {
            path: dir.clone(),
            message,
        })?;
    let model = with_stable_param_ids(model);
    let have = param_entries(&model);
    if have != state.params {
        let first = have
            .iter()
            .zip(&state.params)
            .find(|(a, b)| a != b)
            .map(|(a, b)| {
                format!(
                    "parameter `{}` {:?} vs `{}` {:?}",
                    a.path, a.shape, b.path, b.shape
                )
            })
            .unwrap_or_else(|| {
                format!("{} parameters vs {} saved", have.len(), state.params.len())
            });
        return Err(CheckpointError::Mismatch {
            path: dir.clone(),
            message: first,
        });
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let bytes = fs_err::read(&opt_path)?;
    let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
        CheckpointError::Optimizer {
            path: opt_path.clone(),
            message: format!("{e:?}"),
        }
    })?;
    Ok((model, optimizer.load_record(record), state))
}
