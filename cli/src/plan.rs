//! The checked plan: a spec's grid expanded into runs, each with its id, name, resolved
//! configuration and rendered scripts. Building a plan writes nothing; every error (spec, grid,
//! template) surfaces here, before anything is submitted.

use crate::grid::{self, Point};
use crate::identity::{identity, resolved, run_id};
use crate::spec::{Spec, SpecError, Val};
use crate::template::{EvalJobContext, JobContext, Renderer};
use sftctl_ledger::evals::EvalPlacement;
use sftctl_ledger::{Ledger, layout::script_name};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// sftctl's version, recorded in the ledger and scripts.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One grid point, ready to submit.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub point: Point,
    /// All hyperparameters, defaults filled in.
    pub train: BTreeMap<String, Val>,
    pub identity: serde_json::Value,
    /// `config.json`: what the runtime reads.
    pub config: serde_json::Value,
    /// `(phase, script text)`; phase 0 for an unphased run.
    pub scripts: Vec<(u32, String)>,
    /// `(evaluation, script text)` of each evaluation that runs as its own job.
    pub eval_scripts: Vec<(String, String)>,
}

impl PlannedRun {
    /// The run's phases (`[0]` unless it is phased).
    pub fn phases(&self) -> Vec<u32> {
        self.scripts.iter().map(|(p, _)| *p).collect()
    }
}

/// A spec turned into runs.
#[derive(Debug)]
pub struct Plan {
    pub spec: Spec,
    pub ledger: Ledger,
    pub runs: Vec<PlannedRun>,
}

impl Plan {
    pub fn sweep_dir(&self) -> sftctl_ledger::SweepDir {
        self.ledger.sweep(&self.spec.name)
    }
    /// GPU-hours a run may use at most: nodes × GPUs × time limit, per phase job.
    pub fn gpu_hours(&self, run: &PlannedRun) -> f64 {
        let s = &self.spec.slurm;
        f64::from(s.nodes * s.gpus_per_node) * s.time_s as f64 / 3600.0 * run.scripts.len() as f64
    }
    /// The distinct phase lists of the runs (`[[0]]` for an unphased sweep).
    pub fn phases(&self) -> Vec<Vec<u32>> {
        let mut v: Vec<Vec<u32>> = self.runs.iter().map(PlannedRun::phases).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn absolute(base: &Path, p: &str) -> String {
    let joined = base.join(p);
    std::path::absolute(&joined)
        .unwrap_or(joined)
        .to_string_lossy()
        .into_owned()
}

/// Human name of a point: its axis values, `lr=2e-5,seed=1`.
pub fn point_name(sweep: &str, p: &Point) -> String {
    if p.is_empty() {
        return sweep.to_owned();
    }
    p.iter()
        .map(|(k, v)| format!("{k}={}", v.short()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the plan. `binary` is what `{binary}` in the command becomes (the ledger copy at
/// submit time, the spec's value for `plan`).
pub fn build(spec: Spec, binary: Option<&str>) -> Result<Plan, SpecError> {
    let points = grid::expand(&spec.source, spec.grid.as_ref())?;
    let renderer = match &spec.template {
        None => Renderer::default_template(),
        Some(p) => {
            let text =
                fs_err::read_to_string(p).map_err(|e| spec.source.error(None, e.to_string()))?;
            Renderer::new(&p.display().to_string(), text).map_err(|e| spec.source.error(None, e))?
        }
    };
    let eval_renderer = match &spec.eval_template {
        None => Renderer::default_eval_template(),
        Some(p) => {
            let text =
                fs_err::read_to_string(p).map_err(|e| spec.source.error(None, e.to_string()))?;
            Renderer::new(&p.display().to_string(), text).map_err(|e| spec.source.error(None, e))?
        }
    };
    let evals_json: Vec<serde_json::Value> = spec
        .evals
        .iter()
        .map(|e| serde_json::to_value(&e.spec).unwrap_or_default())
        .collect();
    let ledger_root = std::path::absolute(&spec.ledger).unwrap_or_else(|_| spec.ledger.clone());
    // Run directories go into `#SBATCH --output=`, which no shell reads (quotes are not
    // undone, a newline ends the directive and starts shell code, `%` is a Slurm pattern).
    let root_text = ledger_root.to_string_lossy();
    if !root_text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.,:=@+/".contains(&b))
    {
        return Err(spec.source.error(
            None,
            format!(
                "ledger root `{}` may hold only letters, digits and `_-.,:=@+/`: run directories go into `#SBATCH --output`\nhint: set `sweep.ledger` to a plainer path",
                root_text.escape_debug()
            ),
        ));
    }
    let ledger = Ledger::at(ledger_root);
    let sweep_dir = ledger.sweep(&spec.name);
    let data_ident = serde_json::to_value(&spec.data).unwrap_or_default();
    let data_abs: Vec<serde_json::Value> = spec
        .data
        .iter()
        .map(|d| serde_json::json!({"name": d.name, "path": absolute(&spec.dir, &d.path), "phase": d.phase}))
        .collect();
    let s = &spec.slurm;
    let times = s
        .signal_seconds
        .is_none()
        .then(|| crate::lead::SweepTimes::read(&sweep_dir));
    let model_abs = absolute(&spec.dir, &spec.model_path);
    let mut runs = Vec::with_capacity(points.len());
    let mut seen = HashSet::new();
    for point in points {
        let mut explicit = spec.train.clone();
        explicit.extend(point.clone());
        let ident = identity(&spec.model_path, &data_ident, &explicit);
        let id = run_id(&ident);
        if !seen.insert(id.clone()) {
            continue;
        }
        let train = resolved(&explicit);
        let phases: Vec<u32> = if train.get("strategy") == Some(&Val::Str("phased".into())) {
            let mut ps: Vec<u32> = spec.data.iter().filter_map(|d| d.phase).collect();
            ps.sort_unstable();
            ps.dedup();
            if ps.is_empty() {
                return Err(spec.source.error(
                    None,
                    "`strategy = \"phased\"` needs data sets with a `phase`",
                ));
            }
            ps
        } else {
            vec![0]
        };
        let name = point_name(&spec.name, &point);
        let run_dir = sweep_dir.run(&id).path().to_string_lossy().into_owned();
        let config = serde_json::json!({
            "format_version": sftctl_ledger::FORMAT_VERSION,
            "run_id": id,
            "name": name,
            "sweep": spec.name,
            "model": {"path": model_abs},
            "data": data_abs,
            "train": train.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
            "phases": phases,
            "resources": {"nodes": s.nodes, "gpus_per_node": s.gpus_per_node, "cpus_per_task": s.cpus_per_task, "time_limit_s": s.time_s},
            "evals": evals_json,
        });
        let mut scripts = Vec::new();
        for &phase in &phases {
            let command = spec
                .command
                .iter()
                .map(|w| {
                    w.replace("{binary}", binary.unwrap_or(""))
                        .replace("{run_dir}", &run_dir)
                        .replace("{config}", &format!("{run_dir}/config.json"))
                        .replace("{phase}", &phase.to_string())
                })
                .collect();
            let ctx = JobContext {
                sftctl_version: VERSION.into(),
                sweep: spec.name.clone(),
                run_id: id.clone(),
                run_name: name.clone(),
                run_dir: run_dir.clone(),
                log: format!("{run_dir}/logs/slurm-%j.out"),
                job_name: format!("sft.{}.{id}", spec.name),
                phase,
                nodes: s.nodes,
                gpus_per_node: s.gpus_per_node,
                ranks_per_node: s.ranks_per_node,
                cpus_per_task: s.cpus_per_task,
                time: s.time.clone(),
                partition: s.partition.clone(),
                account: s.account.clone(),
                qos: s.qos.clone(),
                constraint: s.constraint.clone(),
                mem: s.mem.clone(),
                extra: s.extra.clone(),
                signal_seconds: s.signal_seconds.unwrap_or_else(|| {
                    let batch = match train.get("batch_size") {
                        Some(Val::Int(b)) => *b as f64,
                        Some(Val::Float(b)) => *b,
                        _ => 1.0,
                    };
                    times.as_ref().map_or(crate::lead::DEFAULT_LEAD_S, |t| {
                        t.lead_s(&id, &model_abs, batch, s.time_s)
                    })
                }),
                modules: spec.env.modules.clone(),
                venv: spec.env.venv.clone(),
                vars: spec.env.vars.clone(),
                command,
            };
            let text = renderer
                .render(&ctx)
                .map_err(|e| spec.source.error(None, e))?;
            scripts.push((phase, text));
        }
        let mut eval_scripts = Vec::new();
        for e in &spec.evals {
            if e.spec.placement != EvalPlacement::EvalJob {
                continue;
            }
            let es = &e.slurm;
            let ctx = EvalJobContext {
                sftctl_version: VERSION.into(),
                sweep: spec.name.clone(),
                run_id: id.clone(),
                run_name: name.clone(),
                run_dir: run_dir.clone(),
                eval: e.spec.name.clone(),
                log: format!("{run_dir}/logs/eval-{}-%j.out", e.spec.name),
                job_name: format!("sft.{}.{id}.{}", spec.name, e.spec.name),
                gpus_per_node: es.gpus_per_node,
                cpus_per_task: es.cpus_per_task,
                time: es.time.clone(),
                partition: es.partition.clone(),
                account: es.account.clone(),
                qos: es.qos.clone(),
                constraint: es.constraint.clone(),
                mem: es.mem.clone(),
                extra: es.extra.clone(),
                modules: spec.env.modules.clone(),
                venv: spec.env.venv.clone(),
                vars: spec.env.vars.clone(),
                command: vec![
                    binary.unwrap_or("").to_owned(),
                    "eval-job".into(),
                    run_dir.clone(),
                    "--eval".into(),
                    e.spec.name.clone(),
                ],
            };
            let text = eval_renderer
                .render(&ctx)
                .map_err(|m| spec.source.error(None, m))?;
            eval_scripts.push((e.spec.name.clone(), text));
        }
        runs.push(PlannedRun {
            index: runs.len(),
            id,
            name,
            point,
            train,
            identity: ident,
            config,
            scripts,
            eval_scripts,
        });
    }
    Ok(Plan { spec, ledger, runs })
}

/// Where a phase's script lives in a run directory.
pub fn script_path(run_dir: &Path, phase: u32) -> PathBuf {
    run_dir.join(script_name(phase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(body: &str) -> Plan {
        let text = format!(
            "[sweep]\nname = \"t\"\n[model]\npath = \"m\"\n[[data]]\nname = \"a\"\npath = \"a.jsonl\"\nphase = 1\n[[data]]\nname = \"b\"\npath = \"b.jsonl\"\nphase = 2\n{body}"
        );
        build(
            Spec::parse(Path::new("/tmp/x/s.toml"), text).unwrap(),
            Some("/bin/true"),
        )
        .unwrap()
    }

    #[test]
    fn adding_axis_values_keeps_existing_ids() {
        let a = plan("[grid]\nseed = [0, 1]\n");
        let b = plan("[grid]\nseed = [0, 1, 2]\nlr = [2e-5]\n");
        let ids_a: Vec<_> = a.runs.iter().map(|r| r.id.clone()).collect();
        let ids_b: Vec<_> = b.runs.iter().map(|r| r.id.clone()).collect();
        // lr = 2e-5 is the default, so the axis adds nothing to the identity.
        assert_eq!(&ids_b[..2], &ids_a[..]);
        assert_eq!(b.runs.len(), 3);
    }

    #[test]
    fn phased_runs_get_a_script_per_phase() {
        let p = plan("[train]\nstrategy = \"phased\"\n");
        assert_eq!(p.phases(), vec![vec![1, 2]]);
        assert!(p.runs[0].scripts[1].1.contains("export SFTCTL_PHASE=2"));
        assert_eq!(p.runs[0].config["data"][0]["path"], "/tmp/x/a.jsonl");
        let q = plan("");
        assert_eq!(q.phases(), vec![vec![0]]);
        assert_eq!(q.runs[0].config["train"]["lr"], 2e-5);
    }
}
