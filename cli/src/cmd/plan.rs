//! `sftctl plan`: the grid as a table or JSON. Writes nothing.

use crate::args::PlanArgs;
use crate::plan::build;
use crate::spec::Spec;
use std::io::Write;

pub fn run(a: &PlanArgs) -> anyhow::Result<()> {
    let spec = Spec::load(&a.spec)?;
    let binary = spec.binary.clone();
    let plan = build(spec, binary.as_deref())?;
    let total: f64 = plan.runs.iter().map(|r| plan.gpu_hours(r)).sum();
    let s = &plan.spec.slurm;
    // The estimate needs the model's config.json; without it the plan is still shown.
    let memory = crate::memory::estimates(&plan);
    if let Err(e) = &memory {
        eprintln!("note: no memory estimate: {e}");
    }
    let memory = memory.ok();
    let limit = (a.gpu_mem_gib * f64::from(1u32 << 30)) as u64;
    let mem_of = |i: usize| memory.as_ref().and_then(|m| m.get(i)).copied();
    // Micro-batches per rank and step: needs the tokenizer and the data; without them the plan
    // is still shown.
    let world = s.nodes * s.ranks_per_node;
    let ranges = crate::ranks::ranges(&plan);
    if let Err(e) = &ranges {
        eprintln!("note: no micro-batches per rank: {e}");
    }
    let ranges = ranges.ok();
    let phases_of = |i: usize| ranges.as_ref().and_then(|r| r.get(i));
    let range_of = |i: usize| phases_of(i).and_then(|p| crate::ranks::overall(p));
    let text_of = |m: &crate::ranks::MicroBatchRange| {
        if m.min == m.max {
            m.min.to_string()
        } else {
            format!("{}-{}", m.min, m.max)
        }
    };
    // A phased run shows one range per phase, in phase order: `3-4/6-7`.
    let mb_of = |i: usize| {
        phases_of(i).map_or("?".to_string(), |p| {
            p.iter()
                .map(|(_, m)| text_of(m))
                .collect::<Vec<_>>()
                .join("/")
        })
    };
    let mb_width = plan
        .runs
        .iter()
        .map(|r| mb_of(r.index).len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        let runs: Vec<serde_json::Value> = plan
            .runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.id, "name": r.name, "train": r.config["train"],
                    "phases": r.scripts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                    "gpu_hours": plan.gpu_hours(r),
                    "world_size": world,
                    "micro_batches_per_rank": range_of(r.index).map(|m| serde_json::json!({
                        "min": m.min, "max": m.max, "steps": m.steps, "sampled": m.sampled,
                    })),
                    "micro_batches_per_rank_by_phase": phases_of(r.index).map(|p| p.iter().map(|(phase, m)| serde_json::json!({
                        "phase": phase, "min": m.min, "max": m.max, "steps": m.steps, "sampled": m.sampled,
                    })).collect::<Vec<_>>()),
                    "memory_per_gpu": mem_of(r.index).map(|e| serde_json::json!({
                        "total_bytes": e.total(), "params": e.params, "weights": e.weights,
                        "gradients": e.gradients, "optimizer": e.optimizer,
                        "activations": e.activations, "logits": e.logits,
                        "exceeds_gpu": e.total() > limit,
                    })),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "sweep": plan.spec.name, "ledger": plan.ledger.root(), "runs": runs,
            "resources": {"nodes": s.nodes, "gpus_per_node": s.gpus_per_node, "ranks_per_node": s.ranks_per_node, "world_size": s.nodes * s.ranks_per_node, "cpus_per_task": s.cpus_per_task, "time": s.time},
            "total_gpu_hours": total,
            "evals": plan.spec.evals.iter().map(|e| {
                let mut v = serde_json::to_value(&e.spec).unwrap_or_default();
                if e.spec.placement == sftctl_ledger::evals::EvalPlacement::EvalJob {
                    v["job"] = serde_json::json!({"gpus_per_node": e.slurm.gpus_per_node, "cpus_per_task": e.slurm.cpus_per_task, "time": e.slurm.time, "partition": e.slurm.partition});
                }
                v
            }).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let axes: Vec<String> = plan
            .runs
            .first()
            .map(|r| r.point.keys().cloned().collect())
            .unwrap_or_default();
        write!(out, "{:<5} {:<12}", "#", "RUN")?;
        for k in &axes {
            write!(out, " {k:>12}")?;
        }
        // GPU-H stays the last column (scripts read it); MEM/GPU goes before it.
        write!(out, " {:>7} {:>mb_width$}", "RANKS", "MB/RANK")?;
        write!(out, " {:>11}", "MEM/GPU")?;
        writeln!(out, " {:>9}", "GPU-H")?;
        for r in &plan.runs {
            write!(out, "{:<5} {:<12}", r.index, r.id)?;
            for k in &axes {
                write!(
                    out,
                    " {:>12}",
                    r.point.get(k).map(|v| v.short()).unwrap_or_default()
                )?;
            }
            let mem = mem_of(r.index).map_or("?".to_string(), |e| {
                let flag = if e.total() > limit { "!" } else { "" };
                format!("{}{flag}", sftctl_memory::gib(e.total()))
            });
            let mb = mb_of(r.index);
            write!(out, " {world:>7} {mb:>mb_width$}")?;
            write!(out, " {mem:>11}")?;
            writeln!(out, " {:>9.2}", plan.gpu_hours(r))?;
        }
        out.flush()?;
        eprintln!(
            "{} runs of sweep `{}`; each {} node(s) x {} GPU(s), {} rank(s) in all, {} CPU(s), time {}; phases {:?}; at most {:.2} GPU-hours in all",
            plan.runs.len(),
            plan.spec.name,
            s.nodes,
            s.gpus_per_node,
            world,
            s.cpus_per_task,
            s.time,
            plan.phases(),
            total
        );
        for e in &plan.spec.evals {
            let what = match &e.spec.kind {
                sftctl_ledger::evals::EvalKind::Mmlu { data, .. } => format!("mmlu on `{data}`"),
                sftctl_ledger::evals::EvalKind::Command { command, .. } => {
                    format!("`{}`", command.join(" "))
                }
            };
            let checkpoints = match e.spec.checkpoints {
                sftctl_ledger::evals::EvalCheckpoints::All => "every checkpoint",
                sftctl_ledger::evals::EvalCheckpoints::Final => "the final checkpoint",
            };
            let place = match e.spec.placement {
                sftctl_ledger::evals::EvalPlacement::TrainingJob => {
                    "inside the training job".to_owned()
                }
                sftctl_ledger::evals::EvalPlacement::EvalJob => format!(
                    "as its own job per run ({} GPU(s), {} CPU(s), time {})",
                    e.slurm.gpus_per_node, e.slurm.cpus_per_task, e.slurm.time
                ),
            };
            eprintln!(
                "evaluation `{}`: {what} on {checkpoints}, {place}",
                e.spec.name
            );
        }
        let over: Vec<&str> = plan
            .runs
            .iter()
            .filter(|r| mem_of(r.index).is_some_and(|e| e.total() > limit))
            .map(|r| r.id.as_str())
            .collect();
        if let Some(e) = mem_of(0) {
            eprintln!(
                "memory per GPU (run 0): weights {}, gradients {}, optimizer {}, activations {}, logits {} (fp32; docs/gpu.md)",
                sftctl_memory::gib(e.weights),
                sftctl_memory::gib(e.gradients),
                sftctl_memory::gib(e.optimizer),
                sftctl_memory::gib(e.activations),
                sftctl_memory::gib(e.logits)
            );
        }
        if plan.runs.iter().any(|r| r.scripts.len() > 1) && ranges.is_some() {
            eprintln!(
                "MB/RANK of a phased run: one range per phase, in phase order (phases {:?})",
                plan.phases()
            );
        }
        if ranges
            .as_ref()
            .is_some_and(|r| r.iter().flatten().any(|(_, m)| m.sampled))
        {
            eprintln!(
                "micro-batches per rank (MB/RANK) from the first {} MiB of each larger data file",
                crate::ranks::SAMPLE_BYTES >> 20
            );
        }
        if !over.is_empty() {
            eprintln!(
                "warning: {} run(s) need more than the GPU's {} GiB (--gpu-mem-gib): {}\nhint: set ce_chunk_tokens, activation_checkpointing = \"blocks\", a smaller token_budget_per_gpu, or more GPUs",
                over.len(),
                a.gpu_mem_gib,
                over.join(", ")
            );
        }
    }
    Ok(())
}
