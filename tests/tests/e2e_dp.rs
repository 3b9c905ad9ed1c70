//! End to end, data parallelism through `sftctl submit` on the local Slurm cluster: the tiny
//! Llama trained with 2 nodes × 1 rank (mpirun, MPI-featured `sftctl-train`) against the same
//! sweep on 1 node × 1 rank, whose one rank accumulates both ranks' micro-batches; and a rank
//! lost on the second node (SIGKILL, SIGSTOP): the job fails within 60 s, `sftctl status` says
//! which rank was lost and how, and `submit --retry-failed` resumes from the last checkpoint;
//! and a stop request (USR1 to one rank, or to the batch shell through mpirun) that both ranks
//! agree on: one checkpoint at one step, a requeue, and a resume equal to an uninterrupted run.

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
    spec_with(name, nodes, binary, "max_steps = 4\n")
}

/// The sweep of [`spec`] with more `[train]` keys (`train`, newline-terminated lines).
fn spec_with(name: &str, nodes: u32, binary: &Path, train: &str) -> String {
    format!(
        "[sweep]\nname = \"{name}\"\nledger = \"ledger\"\n\
         [model]\npath = \"model\"\n\
         [[data]]\nname = \"chat\"\npath = \"data/train.jsonl\"\n\
         [train]\nbatch_size = 8\nmicro_batch_size = 1\nmax_seq_len = 64\n{train}\
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

/// A sandbox owned by the test user with the tiny Llama in `model/`, 48 quickstart
/// conversations in `data/train.jsonl` (no eval.jsonl, so no validation pass) and a copy of the
/// MPI-featured runtime, whose path is returned.
fn sandbox() -> (Sandbox, PathBuf) {
    let binary = mpi_binary();
    let sb = Sandbox::new(true);
    let repo = repo();
    copy_dir(
        &repo.join("examples/models/tiny-llama"),
        &sb.path().join("model"),
    );
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
    (sb, bin_copy)
}

#[test]
fn two_nodes_equal_one_node_with_twice_the_accumulation() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, bin_copy) = sandbox();

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
    let log = job_log;
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

#[test]
fn plan_shows_micro_batches_per_rank_for_every_phase() {
    let sb = Sandbox::new(false);
    let repo = repo();
    let model = repo.join("examples/models/tiny-llama");
    let train = fs_err::read_to_string(repo.join("examples/data/quickstart/train.jsonl")).unwrap();
    let long: Vec<&str> = train.lines().take(48).collect();
    sb.write("long.jsonl", &(long.join("\n") + "\n"));
    // Conversations of a few tokens: many share a micro-batch, so phase 2 needs fewer.
    let short = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"ok\"}]}\n";
    sb.write("short.jsonl", &short.repeat(48));
    let head = |name: &str| {
        format!(
            "[sweep]\nname = \"{name}\"\n[model]\npath = \"{}\"\n",
            model.display()
        )
    };
    let train_keys = "batch_size = 8\nmicro_batch_size = 1\nmax_seq_len = 64\nmax_steps = 6\n";
    let slurm = "[slurm]\nnodes = 2\nranks_per_node = 1\n";
    sb.write(
        "phased.toml",
        &format!(
            "{}[[data]]\nname = \"long\"\npath = \"long.jsonl\"\nphase = 1\n\
             [[data]]\nname = \"short\"\npath = \"short.jsonl\"\nphase = 2\n\
             [train]\nstrategy = \"phased\"\n{train_keys}{slurm}",
            head("phased")
        ),
    );
    for file in ["long", "short"] {
        sb.write(
            &format!("{file}.toml"),
            &format!(
                "{}[[data]]\nname = \"{file}\"\npath = \"{file}.jsonl\"\n[train]\n{train_keys}{slurm}",
                head(file)
            ),
        );
    }
    let plan = |spec: &str| -> serde_json::Value {
        serde_json::from_str(&sb.ok(&["plan", spec, "--json"])).unwrap()
    };
    let range = |v: &serde_json::Value| (v["min"].as_u64().unwrap(), v["max"].as_u64().unwrap());
    let phased = plan("phased.toml");
    let by_phase = phased["runs"][0]["micro_batches_per_rank_by_phase"]
        .as_array()
        .unwrap_or_else(|| panic!("{phased:#}"));
    assert_eq!(by_phase.len(), 2, "{phased:#}");
    // Each phase packs its own data with a fresh sampler: its range is that of an unphased run
    // on the same data.
    let (long, short) = (plan("long.toml"), plan("short.toml"));
    let one = |p: &serde_json::Value| range(&p["runs"][0]["micro_batches_per_rank"]);
    assert_eq!(by_phase[0]["phase"], 1);
    assert_eq!(by_phase[1]["phase"], 2);
    assert_eq!(range(&by_phase[0]), one(&long), "{phased:#}\n{long:#}");
    assert_eq!(range(&by_phase[1]), one(&short), "{phased:#}\n{short:#}");
    assert!(one(&short).1 < one(&long).0, "{short:#}\n{long:#}");
    // The whole run's range spans both.
    assert_eq!(
        range(&phased["runs"][0]["micro_batches_per_rank"]),
        (one(&short).0, one(&long).1)
    );
    let show = |(a, b): (u64, u64)| match a == b {
        true => a.to_string(),
        false => format!("{a}-{b}"),
    };
    let table = sb.ok(&["plan", "phased.toml"]);
    let cell = format!("{}/{}", show(one(&long)), show(one(&short)));
    assert!(
        table.contains(&format!(" {cell} ")),
        "`{cell}` not in\n{table}"
    );
}

/// The post-mortem on the real `srun`'s report (the launcher of GPU ranks, which cannot run here
/// with NCCL): a 2-task step on n1 and n2 whose task 1 dies, then `sftctl-train post-mortem` on
/// the captured stderr must name rank 1 on n2 and how it ended.
#[test]
fn the_post_mortem_reads_what_srun_reports() {
    let Some(_lock) = lock_cluster() else { return };
    let binary = mpi_binary();
    // (task 1's end, expected sentence)
    let cases = [
        (
            "kill -9 $$",
            "rank 1 on n2 was killed by signal 9 (SIGKILL); srun ended the job",
        ),
        (
            "echo \"rank 1: error: disk full\" >&2; exit 3",
            "rank 1 on n2 exited with status 3: disk full; srun ended the job",
        ),
    ];
    for (end, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let task = format!("if [ \"$SLURM_PROCID\" = 1 ]; then sleep 1; {end}; else sleep 60; fi");
        let started = std::time::Instant::now();
        let out = Command::new("srun")
            .args([
                "--nodes=2",
                "--ntasks=2",
                "--label",
                "--kill-on-bad-exit=1",
                "--time=2",
                "bash",
                "-c",
            ])
            .arg(&task)
            .output()
            .unwrap();
        eprintln!(
            "srun with task 1 ending by `{end}`: ended after {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            out.status
        );
        assert!(!out.status.success());
        let log = dir.path().join("job.log");
        fs_err::write(&log, &out.stderr).unwrap();
        let run = dir.path().join("run");
        let pm = Command::new(&binary)
            .arg("post-mortem")
            .arg(&run)
            .args(["--exit-status", &out.status.code().unwrap_or(1).to_string()])
            .arg("--log")
            .arg(&log)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&pm.stderr);
        let srun_said = String::from_utf8_lossy(&out.stderr);
        assert!(pm.status.success(), "{said}");
        // srun may drop a task's last output when it ends the step at once (seen once in 5
        // runs); then the sentence cannot quote it.
        let want = if end.contains("disk full") && !srun_said.contains("rank 1: error: disk full") {
            want.replace(": disk full;", ";")
        } else {
            want.to_string()
        };
        let want = want.as_str();
        assert!(
            said.contains(&format!("post-mortem: {want}")),
            "{said}\nsrun said:\n{srun_said}"
        );
        let events = fs_err::read_to_string(run.join("events/rank-0.jsonl")).unwrap();
        assert!(events.contains(want), "{events}");
    }
}

/// All job logs of a run, concatenated.
fn job_log(run: &Path) -> String {
    fs_err::read_dir(run.join("logs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| fs_err::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Steps of the newest complete checkpoint of a run.
fn complete_checkpoints(run: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs_err::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("COMPLETE").is_file())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("step-")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Rank 1's node and pid from its heartbeat file (`<beat> <node> <pid> <collectives>`,
/// collective/liveness.rs).
fn rank_1(run: &Path) -> Option<(String, u32)> {
    let dir = fs_err::read_dir(run.join("dist")).ok()?;
    for e in dir.flatten() {
        let text = fs_err::read_to_string(e.path().join("rank-1")).unwrap_or_default();
        let w: Vec<&str> = text.split_whitespace().collect();
        if let [_, node, pid, ..] = w[..] {
            return Some((node.to_owned(), pid.parse().ok()?));
        }
    }
    None
}

/// Stops one thread (argv[1], a tid; the main thread's tid is the pid) with
/// `PTRACE_SEIZE` + `PTRACE_INTERRUPT`, which stop only that thread, prints `stopped`, and
/// holds it until killed.
const FREEZE_THREAD: &str = "
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
tid = int(sys.argv[1])
for request in (0x4206, 0x4207):
    if libc.ptrace(request, tid, None, None) != 0:
        sys.exit('ptrace %#x of %d: errno %d' % (request, tid, ctypes.get_errno()))
print('stopped', flush=True)
time.sleep(3600)
";

/// The newest step in metrics.jsonl (a line being written is skipped).
fn last_step(run: &Path) -> Option<u64> {
    let text = fs_err::read_to_string(run.join("metrics.jsonl")).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
}

/// Submits `spec` (sweep `sweep`, 2 nodes), waits until rank 1 runs on `n2` and
/// `ready(newest step, newest complete checkpoint)` holds, sends `signal` to rank 1, and waits
/// for the run to fail. Returns the run directory, the seconds from the signal to the failed
/// state, the newest complete checkpoint when the signal was sent, and the failed status.
fn lose_rank_1(
    sb: &Sandbox,
    spec: &str,
    sweep: &str,
    signal: &str,
    ready: impl Fn(u64, u64) -> bool,
) -> (PathBuf, f64, u64, serde_json::Value) {
    sb.ok(&["submit", spec]);
    let running = sb
        .wait_for(spec, T, |s| {
            s["runs"][0]["step"].as_u64().is_some() || all_in(s, "failed") || all_in(s, "completed")
        })
        .unwrap();
    let run = run_dir(sb, sweep, &running);
    assert!(
        !all_in(&running, "failed") && !all_in(&running, "completed"),
        "{running:#}\n{}",
        job_log(&run)
    );
    let started = std::time::Instant::now();
    let (node, pid, ckpt) = loop {
        let ckpt = complete_checkpoints(&run).last().copied();
        if let (Some((node, pid)), Some(ckpt), Some(step)) = (rank_1(&run), ckpt, last_step(&run))
            && ready(step, ckpt)
        {
            break (node, pid, ckpt);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && !run.join("result.json").exists(),
            "no rank 1 heartbeat, checkpoint or step to stop at:\n{}",
            job_log(&run)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(node, "n2", "rank 1 runs on the second node");
    let sent = std::time::Instant::now();
    // `FREEZE`: stop only rank 1's main thread (the one that trains and calls the
    // collectives) with ptrace, so its heartbeat thread lives on: a rank hung outside the
    // collectives. The tracer holds the stop until it is killed.
    let tracer = if signal == "FREEZE" {
        let mut child = Command::new("python3")
            .args(["-c", FREEZE_THREAD, &pid.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "stopped", "ptrace of {pid}'s main thread");
        Some(child)
    } else {
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{signal} {pid}");
        None
    };
    let failed = sb.wait_for(spec, Duration::from_secs(90), |s| {
        s["runs"][0]["state"].as_str().is_some_and(|st| {
            st != "running" && st != "pending" && st != "completing" && st != "stalled"
        })
    });
    let took = sent.elapsed().as_secs_f64();
    // Never leave a stopped process behind.
    if let Some(mut t) = tracer {
        let _ = t.kill();
        let _ = t.wait();
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    let failed = failed.unwrap_or_else(|e| panic!("SIG{signal}: {e}\n{}", job_log(&run)));
    assert!(
        all_in(&failed, "failed"),
        "SIG{signal}: {failed:#}\n{}",
        job_log(&run)
    );
    (run, took, ckpt, failed)
}

#[test]
fn a_killed_rank_fails_the_job_status_names_it_and_a_retry_resumes() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, bin) = sandbox();
    // 400 steps, a checkpoint every 4; the signal comes when rank 0 has logged the step after a
    // checkpoint (5, 9, ...): rank 1 dies in the next step at the latest, which rank 0 cannot
    // finish, so the retry resumes from that checkpoint and trains at least one step again.
    // Steps of the tiny model take about 10 ms on a quiet machine: many windows to catch one.
    let steps = 400;
    sb.write(
        "kill.toml",
        &spec_with(
            "dp-kill",
            2,
            &bin,
            &format!("epochs = 1000\nmax_steps = {steps}\ncheckpoint_every = 4\n"),
        ),
    );
    let (run, took, ckpt, failed) = lose_rank_1(&sb, "kill.toml", "dp-kill", "KILL", |s, c| {
        s >= 5 && s % 4 == 1 && c == s - 1
    });
    eprintln!("SIGKILL of rank 1 on n2: run failed {took:.1} s later (checkpoint at step {ckpt})");
    assert!(took < 60.0, "{took} s\n{}", job_log(&run));
    let error = failed["runs"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("rank 1 on n2 was killed by signal 9 (SIGKILL); mpirun ended the job"),
        "{failed:#}\n{}",
        job_log(&run)
    );
    // The table shows it too.
    let table = sb.ok(&["status", "kill.toml"]);
    assert!(
        table.contains("rank 1 on n2 was killed by signal 9"),
        "{table}"
    );

    let (from, again) = retry_resumes(&sb, "kill.toml", &run, steps);
    // Rank 0 could not reach the checkpoint after the signal: the retry resumed from the one
    // before it and trained at least one step again.
    assert_eq!(
        from, ckpt,
        "resumed from {from}, not from the checkpoint before the signal"
    );
    assert!(again >= 1, "no step trained twice");
    eprintln!(
        "retry resumed from step {from} and finished step {steps}; {again} re-trained step(s) agree"
    );
}

/// `sftctl submit <spec> --retry-failed` for the failed 2-rank run `run` of `steps` steps: the
/// second attempt, again 2 ranks, must resume from the newest complete checkpoint (and load it),
/// train the steps after it and complete, and the steps both attempts trained must agree (the
/// resume restored parameters, optimizer and data order). Returns the step it resumed from and
/// how many steps were trained twice.
fn retry_resumes(sb: &Sandbox, spec: &str, run: &Path, steps: u64) -> (u64, usize) {
    let newest = complete_checkpoints(run).last().copied();
    sb.ok(&["submit", spec, "--retry-failed"]);
    let done = sb
        .wait_for(spec, T, |s| all_in(s, "completed") || all_in(s, "failed"))
        .unwrap();
    assert!(all_in(&done, "completed"), "{done:#}\n{}", job_log(run));
    let attempts: Vec<serde_json::Value> = fs_err::read_to_string(run.join("attempts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[1]["world_size"], 2);
    let from = attempts[1]["resumed_from_step"].as_u64().unwrap();
    assert_eq!(
        Some(from),
        newest,
        "resumed from {from}, not from the newest complete checkpoint"
    );
    // It loaded that (complete) checkpoint.
    let log = job_log(run);
    assert!(
        log.lines()
            .any(|l| l.contains("resumed") && l.contains(&format!("step={from} "))),
        "{log}"
    );
    // metrics.jsonl: the first attempt's steps, then the second's, `from + 1..=steps`.
    let m = metrics(run);
    let n2 = (steps - from) as usize;
    assert!(m.len() >= n2, "{m:?}");
    let (first, second) = m.split_at(m.len() - n2);
    assert_eq!(
        second.iter().map(|r| r.0).collect::<Vec<_>>(),
        (from + 1..=steps).collect::<Vec<_>>(),
        "{m:?}"
    );
    assert!(first.iter().any(|r| r.0 == from), "{m:?}");
    // Steps both attempts trained (after the checkpoint, before the rank was lost) agree.
    let mut again = 0;
    for (s1, l1, g1) in first.iter().filter(|r| r.0 > from) {
        let (_, l2, g2) = second[(s1 - from - 1) as usize];
        assert!(
            (l1 - l2).abs() <= LOSS_RTOL * l1.abs(),
            "step {s1}: loss {l1} vs {l2}"
        );
        assert!(
            (g1 - g2).abs() <= GNORM_RTOL * g1.abs(),
            "step {s1}: gnorm {g1} vs {g2}"
        );
        again += 1;
    }
    let result: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["final_step"], steps, "{result:#}");
    (from, again)
}

#[test]
fn a_stopped_rank_fails_the_job_status_names_it_and_a_retry_resumes() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, bin) = sandbox();
    let steps = 400;
    sb.write(
        "stop.toml",
        &spec_with(
            "dp-stop",
            2,
            &bin,
            &format!("epochs = 100\nmax_steps = {steps}\ncheckpoint_every = 2\n"),
        ),
    );
    let (run, took, _, failed) = lose_rank_1(&sb, "stop.toml", "dp-stop", "STOP", |s, _| s >= 2);
    eprintln!("SIGSTOP of rank 1 on n2: run failed {took:.1} s later");
    assert!(took < 60.0, "{took} s\n{}", job_log(&run));
    let error = failed["runs"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("rank 1 on n2 stopped answering: no heartbeat for 3"),
        "{failed:#}\n{}",
        job_log(&run)
    );
    // The stopped rank was killed with its job (lose_rank_1 also kills it): a retry, again on
    // 2 ranks, resumes from the newest complete checkpoint and finishes.
    let (from, again) = retry_resumes(&sb, "stop.toml", &run, steps);
    eprintln!(
        "retry resumed from step {from} and finished step {steps}; {again} re-trained step(s) agree"
    );
}

#[test]
fn a_rank_hung_outside_the_collectives_fails_the_job_and_status_names_it() {
    let Some(_lock) = lock_cluster() else { return };
    let (sb, bin) = sandbox();
    let text = spec_with(
        "dp-hang",
        2,
        &bin,
        "epochs = 100\nmax_steps = 400\ncheckpoint_every = 2\n",
    ) + "[env]\nvars = { SFTCTL_COLLECTIVE_TIMEOUT_S = \"10\" }\n";
    sb.write("hang.toml", &text);
    let (run, took, _, failed) = lose_rank_1(&sb, "hang.toml", "dp-hang", "FREEZE", |s, _| s >= 2);
    eprintln!("rank 1's main thread frozen on n2: run failed {took:.1} s later");
    assert!(took < 60.0, "{took} s\n{}", job_log(&run));
    let error = failed["runs"][0]["error"].as_str().unwrap_or_default();
    // Rank 1 stops between collectives (almost always: a step is mostly computation), and rank
    // 0 names it; stopped inside one, both ranks wait in it and rank 0 can only say so.
    let named =
        error.starts_with("rank 1 on n2 hung: alive (heartbeats) but it never joined collective `");
    // (The job's error event is rank 0's, so status prefixes it with "rank 0: ".)
    let inside =
        error.starts_with("rank 0: collective `") && error.contains("of rank 0 did not return");
    assert!(
        (named || inside) && error.contains("SFTCTL_COLLECTIVE_TIMEOUT_S"),
        "{failed:#}\n{}",
        job_log(&run)
    );
    eprintln!("status: {error}");
}

/// Waits until attempt `n` of `run` runs and has logged step `after`; fails should the run end
/// first.
fn wait_for_step(run: &Path, n: usize, after: u64) {
    let start = std::time::Instant::now();
    loop {
        let attempts = jsonl(&run.join("attempts.jsonl"));
        if attempts.len() >= n && last_step(run).is_some_and(|s| s >= after) {
            return;
        }
        assert!(
            start.elapsed() < T && !run.join("result.json").exists(),
            "attempt {n} did not reach step {after} (make the run longer):\n{}",
            job_log(run)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for rank 0's `n`-th `preempted` event and returns it; the stop must have left a
/// complete checkpoint of the step it names.
fn preempted_event(run: &Path, n: usize) -> serde_json::Value {
    let start = std::time::Instant::now();
    let event = loop {
        let events = jsonl(&run.join("events/rank-0.jsonl"));
        if let Some(e) = events
            .iter()
            .filter(|e| e["kind"] == "preempted")
            .nth(n - 1)
        {
            break e.clone();
        }
        assert!(
            start.elapsed() < T && !run.join("result.json").exists(),
            "no preempted event {n}: {events:#?}\n{}",
            job_log(run)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let step = event["step"].as_u64().unwrap();
    let start = std::time::Instant::now();
    while !run
        .join(format!("checkpoints/step-{step}/COMPLETE"))
        .is_file()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no complete checkpoint of step {step}:\n{}",
            job_log(run)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    event
}

/// Steps at which each rank logged that it stopped (`stopped; exit 75 ...`, a warning, so ranks
/// other than 0 log it too; `mpirun --tag-output` prefixes each line with `[1,<rank>]`), by rank.
fn stop_lines(run: &Path) -> BTreeMap<u32, Vec<u64>> {
    let mut by_rank: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for line in job_log(run)
        .lines()
        .filter(|l| l.contains("stopped; exit 75"))
    {
        let rank = line
            .split_once("[1,")
            .and_then(|(_, r)| r.split(']').next()?.parse().ok());
        let step = line
            .split_once("step=")
            .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        if let (Some(rank), Some(step)) = (rank, step) {
            by_rank.entry(rank).or_default().push(step);
        }
    }
    by_rank
}

/// The requeued job `job` (rank 0 ran `scontrol requeue` after its checkpoint): Slurm holds it
/// back (BeginTime); once it is pending and its old instance has been gone for a second, start
/// it now, and wait until attempt `n + 1` has begun.
fn release_requeued(sweep: &str, run: &Path, job: &str, n: usize) {
    let start = std::time::Instant::now();
    let mut gone: Option<std::time::Instant> = None;
    let mut seen = Vec::new();
    while jsonl(&run.join("attempts.jsonl")).len() <= n {
        assert!(
            start.elapsed() < T,
            "attempt {} never started (Slurm states {seen:?}):\n{}",
            n + 1,
            job_log(run)
        );
        let state = squeue_jobs(&format!("sft.{sweep}."))
            .unwrap()
            .into_iter()
            .find(|(id, _)| id == job)
            .map(|(_, st)| st);
        if let Some(st) = state {
            if seen.last() != Some(&st) {
                seen.push(st.clone());
            }
            if st == "PENDING" && old_instance_gone(run, job) {
                if gone.get_or_insert_with(std::time::Instant::now).elapsed()
                    >= Duration::from_secs(1)
                {
                    let _ = Command::new("scontrol")
                        .args(["update", &format!("jobid={job}"), "StartTime=now"])
                        .output();
                }
            } else {
                gone = None;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "attempt {} started {:.1} s after the requeue began; Slurm states {seen:?}",
        n + 1,
        start.elapsed().as_secs_f64()
    );
}

/// A stop request is agreed by both ranks through the collective, so the 2-rank job checkpoints
/// at one step, requeues itself and resumes. Attempt 1: USR1 to rank 1 alone (on n2), which
/// rank 0 never receives: rank 0 must stop at the same step through `Collective::any`. Attempt
/// 2: USR1 to the batch shell (`scancel --signal=USR1 --batch`, what Slurm's
/// `--signal=B:USR1@...` does before the time limit): the script forwards it to `mpirun`, which
/// forwards it to both ranks. Each time both ranks log the stop at the step of rank 0's
/// `preempted` event and its complete checkpoint; the job requeues itself (rank 0's `scontrol
/// requeue`, through a stand-in that answers after 3 s, as a busy controller may), attempt 3
/// finishes, and every step's loss and gradient norm equal those of the same sweep trained
/// without a stop.
#[test]
fn a_stop_request_is_agreed_by_every_rank_and_the_requeued_job_resumes() {
    let Some(_lock) = lock_cluster() else { return };
    let t0 = std::time::Instant::now();
    let (sb, bin) = sandbox();
    let steps: u64 = 400;
    let train = format!("epochs = 1000\nmax_steps = {steps}\n");
    sb.write("ref.toml", &spec_with("dp-ref", 2, &bin, &train));
    // Rank 0's `scontrol requeue` answers after 3 s, as a busy controller may: the ranks must
    // not end the job before it has gone through.
    let slow = sb.path().join("slow-slurm");
    fs_err::create_dir_all(&slow).unwrap();
    for c in ["sbatch", "squeue", "sacct", "scancel", "scontrol"] {
        let p = slow.join(c);
        let body = match c {
            "scontrol" => format!(
                "#!/bin/bash\ncase \"$1\" in requeue) echo \"$*\" >> \"$SFTCTL_RUN_DIR/requeues\"; \
                 sleep 3;; esac\nexec /usr/bin/{c} \"$@\"\n"
            ),
            _ => format!("#!/bin/bash\nexec /usr/bin/{c} \"$@\"\n"),
        };
        fs_err::write(&p, body).unwrap();
        let st = Command::new("chmod").arg("a+rx").arg(&p).status().unwrap();
        assert!(st.success());
    }
    sb.write(
        "pre.toml",
        &(spec_with("dp-pre", 2, &bin, &train)
            + &format!(
                "[env]\nvars = {{ SFTCTL_SLURM_BIN = \"{}\" }}\n",
                slow.display()
            )),
    );

    // The uninterrupted reference.
    sb.ok(&["submit", "ref.toml"]);
    let s = sb
        .wait_for("ref.toml", T, |s| {
            all_in(s, "completed") || all_in(s, "failed")
        })
        .unwrap();
    let reference_run = run_dir(&sb, "dp-ref", &s);
    assert!(
        all_in(&s, "completed"),
        "{s:#}\n{}",
        job_log(&reference_run)
    );
    let reference = metrics(&reference_run);
    assert_eq!(reference.len() as u64, steps);

    let out = sb.ok(&["submit", "pre.toml"]);
    let job = out
        .split_whitespace()
        .next()
        .expect("submit prints the job id")
        .to_owned();
    let running = sb
        .wait_for("pre.toml", T, |s| s["runs"][0]["run_id"].is_string())
        .unwrap();
    let run = run_dir(&sb, "dp-pre", &running);

    // Attempt 1: rank 1 alone is signalled.
    wait_for_step(&run, 1, 20);
    let start = std::time::Instant::now();
    let (node, pid) = loop {
        if let Some(r) = rank_1(&run) {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no rank 1 heartbeat"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(node, "n2", "rank 1 runs on the second node");
    let before = last_step(&run).unwrap();
    let st = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -USR1 {pid}");
    let first = preempted_event(&run, 1);
    let s1 = first["step"].as_u64().unwrap();
    assert!(s1 >= before && s1 < steps, "{first}");
    eprintln!(
        "USR1 to rank 1 after step {before}: both ranks stopped at step {s1}; rank 0 recorded \
         signal `{}`",
        first["signal"].as_str().unwrap_or("?")
    );
    release_requeued("dp-pre", &run, &job, 1);
    let stops = stop_lines(&run);
    assert_eq!(
        stops,
        BTreeMap::from([(0, vec![s1]), (1, vec![s1])]),
        "each rank must log its stop at step {s1}:\n{}",
        job_log(&run)
    );

    // Attempt 2: USR1 to the batch shell, forwarded through mpirun to both ranks.
    wait_for_step(&run, 2, s1 + 20);
    let before = last_step(&run).unwrap();
    let o = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &job])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = preempted_event(&run, 2);
    let s2 = second["step"].as_u64().unwrap();
    assert_eq!(second["signal"], "USR1", "{second}");
    assert!(s2 >= before && s2 < steps, "{second}");
    eprintln!("USR1 to the batch shell after step {before}: both ranks stopped at step {s2}");
    release_requeued("dp-pre", &run, &job, 2);
    let stops = stop_lines(&run);
    assert_eq!(
        stops,
        BTreeMap::from([(0, vec![s1, s2]), (1, vec![s1, s2])]),
        "each rank must log its stop at step {s2}:\n{}",
        job_log(&run)
    );

    let done = sb
        .wait_for("pre.toml", T, |s| {
            all_in(s, "completed") || all_in(s, "failed")
        })
        .unwrap();
    assert!(all_in(&done, "completed"), "{done:#}\n{}", job_log(&run));
    // Rank 0 asked for each requeue through the slow stand-in, and the job waited for it.
    let requeues = fs_err::read_to_string(run.join("requeues")).unwrap();
    assert_eq!(
        requeues.lines().collect::<Vec<_>>(),
        [format!("requeue {job}"), format!("requeue {job}")],
        "{requeues}"
    );
    // Slurm requeued the job each time; sftctl never resubmitted it.
    assert_eq!(done["runs"][0]["job_id"], job.as_str(), "{done:#}");
    let attempts = jsonl(&run.join("attempts.jsonl"));
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    for (a, from) in attempts.iter().zip([None, Some(s1), Some(s2)]) {
        assert_eq!(a["job_id"], job.as_str(), "{a}");
        assert_eq!(a["world_size"], 2, "{a}");
        if let Some(from) = from {
            assert_eq!(a["resumed_from_step"], from, "{a}");
        }
    }
    // The stop checkpoint is of the stop step: no step is trained twice, none is lost, and each
    // equals the uninterrupted run's.
    let m = metrics(&run);
    assert_eq!(
        m.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    let mut worst = (0.0f64, 0.0f64);
    for ((step, l, g), (_, lr, gr)) in m.iter().zip(&reference) {
        let (dl, dg) = ((l - lr).abs() / lr.abs(), (g - gr).abs() / gr.abs());
        assert!(
            dl <= LOSS_RTOL,
            "step {step}: loss {l} vs {lr} uninterrupted"
        );
        assert!(
            dg <= GNORM_RTOL,
            "step {step}: grad norm {g} vs {gr} uninterrupted"
        );
        worst = (worst.0.max(dl), worst.1.max(dg));
    }
    let result: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["final_step"], steps, "{result:#}");
    eprintln!(
        "stopped at steps {s1} and {s2}, resumed twice, finished step {steps}; vs uninterrupted: \
         max relative loss diff {:.2e}, grad norm {:.2e}; test took {:.1?}",
        worst.0,
        worst.1,
        t0.elapsed()
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
