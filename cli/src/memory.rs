//! The per-GPU memory estimate `sftctl plan` shows for each grid point: the run's hyperparameters
//! and resources turned into `sftctl_memory::RunShape`. The formula lives in `sftctl-memory`.

use crate::plan::{Plan, PlannedRun};
use crate::spec::Val;
use sftctl_memory::{Estimate, ModelShape, RunShape, estimate};

fn int(run: &PlannedRun, key: &str) -> u64 {
    run.train
        .get(key)
        .and_then(Val::as_f64)
        .map_or(0, |v| v.max(0.0) as u64)
}

/// The memory-relevant shape of `run` under `plan`'s resources.
pub fn run_shape(plan: &Plan, run: &PlannedRun) -> RunShape {
    let s = &plan.spec.slurm;
    let world = u64::from((s.nodes * s.gpus_per_node).max(1));
    // ZeRO-1 shards the moments and an fp32 master copy over every rank (CPU ranks included);
    // bf16 always trains through that flat optimizer (runtime/src/train/precision.rs).
    let bf16 = matches!(run.train.get("precision"), Some(Val::Str(v)) if v == "bf16");
    let zero1 =
        bf16 || matches!(run.train.get("optimizer_sharding"), Some(Val::Str(v)) if v == "zero1");
    let ranks = u64::from((s.nodes * s.ranks_per_node).max(1));
    let micro = int(run, "micro_batch_size").max(1);
    let seq = int(run, "max_seq_len").max(1);
    let budget = int(run, "token_budget_per_gpu");
    let per_rank_samples = int(run, "batch_size").max(1).div_ceil(world);
    let chunk = int(run, "ce_chunk_tokens");
    RunShape {
        tokens_per_micro_batch: if budget > 0 { budget } else { micro * seq },
        max_seq_len: seq,
        micro_batches: per_rank_samples.div_ceil(micro),
        optimizer_shards: if zero1 { ranks } else { 1 },
        fp32_master: zero1,
        ce_chunk_tokens: (chunk > 0).then_some(chunk),
        checkpoint_blocks: matches!(run.train.get("activation_checkpointing"), Some(Val::Str(v)) if v == "blocks"),
        bf16,
        // The template runs the tch backend on CUDA when the job has GPUs (templates/job.sh.j2),
        // where `attention = "auto"` is libtorch's fused kernel.
        fused_attention: s.gpus_per_node > 0
            && !matches!(run.train.get("attention"), Some(Val::Str(v)) if v == "plain"),
    }
}

/// The model's shape, when its `config.json` can be read at plan time.
pub fn model_shape(run: &PlannedRun) -> Result<ModelShape, sftctl_memory::MemoryError> {
    let dir = run.config["model"]["path"].as_str().unwrap_or_default();
    ModelShape::load(std::path::Path::new(dir))
}

/// The estimate of every run (`None` for all when the model's config cannot be read).
pub fn estimates(plan: &Plan) -> Result<Vec<Estimate>, sftctl_memory::MemoryError> {
    let Some(first) = plan.runs.first() else {
        return Ok(Vec::new());
    };
    let model = model_shape(first)?;
    Ok(plan
        .runs
        .iter()
        .map(|r| estimate(&model, &run_shape(plan, r)))
        .collect())
}
