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
                })
            })
            .collect();
        let doc = serde_json::json!({
            "sweep": plan.spec.name, "ledger": plan.ledger.root(), "runs": runs,
            "resources": {"nodes": s.nodes, "gpus_per_node": s.gpus_per_node, "cpus_per_task": s.cpus_per_task, "time": s.time},
            "total_gpu_hours": total,
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
            writeln!(out, " {:>9.2}", plan.gpu_hours(r))?;
        }
        out.flush()?;
        eprintln!(
            "{} runs of sweep `{}`; each {} node(s) x {} GPU(s), {} CPU(s), time {}; phases {:?}; at most {:.2} GPU-hours in all",
            plan.runs.len(),
            plan.spec.name,
            s.nodes,
            s.gpus_per_node,
            s.cpus_per_task,
            s.time,
            plan.phases(),
            total
        );
    }
    Ok(())
}
