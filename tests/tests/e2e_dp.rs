//! End to end, data parallelism through `sftctl submit` on the local Slurm cluster: the tiny
//! Llama trained with 2 nodes × 1 rank (mpirun, MPI-featured `sftctl-train`) against the same
//! sweep on 1 node × 1 rank, whose one rank accumulates both ranks' micro-batches.

use sftctl_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(240);

/// Per-step loss, relative.
const LOSS_RTOL: f64 = 1e-6;
/// Per-step gradient norm, relative.
const GNORM_RTOL: f64 = 1e-5;
/// Final parameters, absolute (fp32 rounding of a different summation order).
const PARAM_ATOL: f32 = 1e-6;

/// The MPI-featured runtime binary: `SFTCTL_TRAIN_MPI`, else `sftctl-train-mpi` in the target
/// directory (tests/run.sh builds it there).
fn mpi_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SFTCTL_TRAIN_MPI") {
        return PathBuf::from(p);
    }
    let p = sftctl_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("sftctl-train-mpi");
    assert!(
        p.is_file(),
        "`{}` is missing: build it with `cargo build -p sftctl-runtime --features mpi --bin \
         sftctl-train` and copy it there (tests/run.sh does), or set SFTCTL_TRAIN_MPI",
        p.display()
    );
    p
}

fn spec(name: &str, nodes: u32, binary: &Path) -> String {
    format!(
        "[sweep]\nname = \"{name}\"\nledger = \"ledger\"\n\
         [model]\npath = \"model\"\n\
         [[data]]\nname = \"chat\"\npath = \"data/train.jsonl\"\n\
         [train]\nbatch_size = 8\nmicro_batch_size = 1\nmax_seq_len = 64\nmax_steps = 4\n\
         warmup_steps = 1\ngrad_clip = 0.5\nlr = 3e-3\n\
         [grid]\nseed = [0]\n\
         [run]\nbinary = \"{}\"\n\
         [slurm]\ntime = \"5\"\nnodes = {nodes}\nranks_per_node = 1\n",
        binary.display()
    )
}

/// `(step, loss, grad_norm)` of every metrics record.
fn metrics(run: &Path) -> Vec<(u64, f64, f64)> {
    let text = fs_err::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The newest checkpoint's weights, by tensor name, as f32.
fn final_params(run: &Path) -> BTreeMap<String, Vec<f32>> {
    let dir = fs_err::read_dir(run.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step: u64 = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .max()
        .expect("a checkpoint")
        .1;
    read_f32(&dir.join("model.safetensors"))
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for e in fs_err::read_dir(from).unwrap().flatten() {
        fs_err::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn run_dir(sb: &Sandbox, sweep: &str, status: &serde_json::Value) -> PathBuf {
    let id = status["runs"][0]["run_id"].as_str().unwrap();
    sb.path().join(format!("ledger/sweeps/{sweep}/runs/{id}"))
}

#[test]
fn two_nodes_equal_one_node_with_twice_the_accumulation() {
    let Some(_lock) = lock_cluster() else { return };
    let binary = mpi_binary();
    let sb = Sandbox::new(true);
    let repo = repo();
    copy_dir(
        &repo.join("examples/models/tiny-llama"),
        &sb.path().join("model"),
    );
    // 48 conversations: 4 steps of 8 and then some; no eval.jsonl, so no validation pass.
    let train = fs_err::read_to_string(repo.join("examples/data/quickstart/train.jsonl")).unwrap();
    fs_err::create_dir_all(sb.path().join("data")).unwrap();
    let subset: Vec<&str> = train.lines().take(48).collect();
    sb.write("data/train.jsonl", &(subset.join("\n") + "\n"));
    let bin_copy = sb.path().join("sftctl-train-mpi");
    fs_err::copy(&binary, &bin_copy).unwrap();
    let st = Command::new("chown")
        .args(["-R", TEST_USER])
        .arg(sb.path())
        .status()
        .unwrap();
    assert!(st.success());

    sb.write("two.toml", &spec("dp-two", 2, &bin_copy));
    sb.write("one.toml", &spec("dp-one", 1, &bin_copy));
    // The plan shows the world size and each rank's micro-batches per step: with two ranks each
    // accumulates about half of what the single rank does.
    let plan = |spec: &str| -> serde_json::Value {
        serde_json::from_str(&sb.ok(&["plan", spec, "--json"])).unwrap()
    };
    let (plan2, plan1) = (plan("two.toml"), plan("one.toml"));
    assert_eq!(plan2["resources"]["world_size"], 2, "{plan2:#}");
    assert_eq!(plan1["resources"]["world_size"], 1, "{plan1:#}");
    let mb = |p: &serde_json::Value, k: &str| {
        p["runs"][0]["micro_batches_per_rank"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("{p:#}"))
    };
    assert!(mb(&plan2, "min") >= 2, "{plan2:#}");
    assert!(
        mb(&plan2, "max") < mb(&plan1, "min"),
        "{plan2:#}\n{plan1:#}"
    );
    sb.ok(&["submit", "two.toml"]);
    sb.ok(&["submit", "one.toml"]);
    let s2 = sb.wait_for("two.toml", T, |s| {
        all_in(s, "completed") || all_in(s, "failed")
    });
    let s1 = sb.wait_for("one.toml", T, |s| {
        all_in(s, "completed") || all_in(s, "failed")
    });
    let (s2, s1) = (s2.unwrap(), s1.unwrap());
    let (two, one) = (run_dir(&sb, "dp-two", &s2), run_dir(&sb, "dp-one", &s1));
    let log = |run: &Path| -> String {
        fs_err::read_dir(run.join("logs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| fs_err::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(all_in(&s2, "completed"), "{s2:#}\n{}", log(&two));
    assert!(all_in(&s1, "completed"), "{s1:#}\n{}", log(&one));

    // Two ranks really ran, one per node, and rank 0 alone wrote the ledger.
    let script = fs_err::read_to_string(two.join("job.sh")).unwrap();
    assert!(script.contains("mpirun"), "{script}");
    let attempts = fs_err::read_to_string(two.join("attempts.jsonl")).unwrap();
    assert!(attempts.contains("\"world_size\":2"), "{attempts}");
    assert!(!two.join("events/rank-1.jsonl").exists());

    let (m2, m1) = (metrics(&two), metrics(&one));
    assert_eq!(m2.len(), 4, "{m2:?}");
    assert_eq!(
        m2.iter().map(|m| m.0).collect::<Vec<_>>(),
        m1.iter().map(|m| m.0).collect::<Vec<_>>()
    );
    let mut worst = (0.0f64, 0.0f64, 0.0f32);
    for ((step, l2, g2), (_, l1, g1)) in m2.iter().zip(&m1) {
        let (dl, dg) = ((l2 - l1).abs() / l1.abs(), (g2 - g1).abs() / g1.abs());
        assert!(dl <= LOSS_RTOL, "step {step}: loss {l2} vs {l1}");
        assert!(dg <= GNORM_RTOL, "step {step}: grad norm {g2} vs {g1}");
        worst = (worst.0.max(dl), worst.1.max(dg), worst.2);
    }
    let (p2, p1) = (final_params(&two), final_params(&one));
    assert_eq!(p2.keys().collect::<Vec<_>>(), p1.keys().collect::<Vec<_>>());
    let base = read_f32(&sb.path().join("model/model.safetensors"));
    let mut moved = 0.0f32;
    for (name, a) in &p2 {
        let b = &p1[name];
        for ((x, y), z) in a.iter().zip(b).zip(&base[name]) {
            let d = (x - y).abs();
            assert!(d <= PARAM_ATOL, "{name}: {x} vs {y}");
            worst.2 = worst.2.max(d);
            moved = moved.max((y - z).abs());
        }
    }
    // Training moved the parameters far more than the ranks' disagreement.
    assert!(moved > 100.0 * PARAM_ATOL, "parameters moved only {moved}");
    eprintln!(
        "2 ranks vs 1: max relative loss diff {:.2e}, grad norm {:.2e}; max |param diff| {:.2e} (moved up to {moved:.2e})",
        worst.0, worst.1, worst.2
    );
}

/// Every tensor of a safetensors file, by name, as f32.
fn read_f32(file: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = fs_err::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(
                view.dtype(),
                safetensors::Dtype::F32,
                "{}: {name}",
                file.display()
            );
            let vals = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, vals)
        })
        .collect()
}
