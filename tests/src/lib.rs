//! The end-to-end test harness: one real Slurm cluster on loopback shared by all tests (started
//! by `tests/slurm/start.sh`), a lock that runs Slurm tests one at a time, sandboxes owned by
//! the unprivileged user `sftctl-test`, and helpers that drive the built `sftctl` binary.

use anyhow::{Context, Result, bail};
use sftctl_ledger::Claim;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The user that sftctl and the jobs run as in permission-sensitive tests.
pub const TEST_USER: &str = "sftctl-test";

/// Repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The built `sftctl` binary, next to the test executable's `deps/` directory.
pub fn sftctl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("sftctl");
    assert!(
        p.is_file(),
        "`{}` is missing: run `cargo build -p sftctl` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// True when the Slurm tests must run (CI sets `SFTCTL_REQUIRE_SLURM=1`); otherwise they are
/// skipped, with a message, on machines without root or Slurm.
fn required() -> bool {
    std::env::var("SFTCTL_REQUIRE_SLURM").is_ok_and(|v| v == "1")
}

/// Starts the shared cluster once per test process (the script is idempotent across
/// processes). `None` when Slurm is unavailable and not required.
pub fn cluster() -> Option<()> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let r = UP.get_or_init(|| {
        let root = nix::unistd::Uid::effective().is_root();
        let have = Path::new("/usr/sbin/slurmctld").exists();
        if !root || !have {
            return Err(format!(
                "Slurm tests need root and Slurm (root: {root}, slurmctld: {have})"
            ));
        }
        let out = Command::new("bash")
            .arg(repo().join("tests/slurm/start.sh"))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "tests/slurm/start.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    match r {
        Ok(()) => Some(()),
        Err(e) if required() => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping: {e} (set SFTCTL_REQUIRE_SLURM=1 to fail instead)");
            None
        }
    }
}

/// Holds the cluster for one test: Slurm tests run one at a time across test processes.
pub struct ClusterLock {
    _claim: Claim,
}

/// Starts the cluster if needed and takes the one-test-at-a-time lock.
pub fn lock_cluster() -> Option<ClusterLock> {
    cluster()?;
    let claim = Claim::acquire(
        Path::new("/tmp/sftctl-slurm-tests.lock"),
        Duration::from_secs(3600),
        Duration::from_secs(1800),
    )
    .expect("Slurm test lock");
    Some(ClusterLock { _claim: claim })
}

/// A directory owned by the test user, removed at the end, after every Slurm job submitted
/// from it is cancelled: a test that fails half-way must not leave a job behind (a job that
/// requeues itself would hold a node of the shared cluster for good).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Run sftctl as [`TEST_USER`] (true) or as the current user.
    pub as_user: bool,
    /// Extra environment for sftctl.
    pub env: Vec<(String, String)>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !Path::new("/usr/bin/squeue").exists() {
            return;
        }
        let Ok(out) = Command::new("timeout")
            .args(["20", "squeue", "-h", "-o", "%i|%Z"])
            .output()
        else {
            return;
        };
        let root = self.path().to_string_lossy().into_owned();
        let jobs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(_, dir)| Path::new(dir).starts_with(&root))
            .map(|(id, _)| id.to_owned())
            .collect();
        if !jobs.is_empty() {
            let _ = Command::new("timeout")
                .args(["20", "scancel"])
                .args(&jobs)
                .status();
        }
    }
}

impl Sandbox {
    /// A sandbox; with `as_user`, owned by and used as [`TEST_USER`].
    pub fn new(as_user: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sftctl-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let s = Self {
            dir,
            as_user,
            env: Vec::new(),
        };
        fs_err::copy(
            repo().join("tests/payload/fake-train.sh"),
            s.path().join("fake-train.sh"),
        )
        .expect("copy payload");
        if as_user {
            s.chown();
        }
        s
    }

    /// A sandbox holding a copy of the repository's `examples/`.
    pub fn with_examples(as_user: bool) -> Self {
        let sb = Self::new(as_user);
        let st = Command::new("cp")
            .arg("-r")
            .arg(repo().join("examples"))
            .arg(sb.path())
            .status()
            .expect("cp -r examples");
        assert!(st.success());
        if as_user {
            sb.chown();
        }
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn chown(&self) {
        let st = Command::new("chown")
            .args(["-R", TEST_USER])
            .arg(self.path())
            .status()
            .expect("chown");
        assert!(st.success());
    }

    /// Writes a file (and gives it to the test user).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        fs_err::write(&p, text).expect("write");
        if self.as_user {
            self.chown();
        }
        p
    }

    /// The command that runs `sftctl args` in the sandbox.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = if self.as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", TEST_USER, "--", "env"]);
            for (k, v) in &self.env {
                c.arg(format!("{k}={v}"));
            }
            c.arg(sftctl_bin());
            c
        } else {
            let mut c = Command::new(sftctl_bin());
            c.envs(self.env.iter().map(|(k, v)| (k, v)));
            c
        };
        c.args(args).current_dir(self.path()).stdin(Stdio::null());
        c
    }

    /// Runs `sftctl args` to completion.
    pub fn sftctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running sftctl")
    }

    /// Runs `sftctl args` and insists on exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.sftctl(args);
        assert!(
            o.status.success(),
            "sftctl {args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `sftctl status SPEC --json`, parsed.
    pub fn status(&self, spec: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", spec, "--json"])).expect("status --json is JSON")
    }

    /// Polls status until `pred` holds; fails after `timeout` with the last status.
    pub fn wait_for(
        &self,
        spec: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let start = Instant::now();
        loop {
            let s = self.status(spec);
            if pred(&s) {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?}; last status:\n{s:#}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// States of the runs of a status document, sorted by run name.
pub fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = status["runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_owned(),
                        r["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// True when every run of a status document is in `state`.
pub fn all_in(status: &serde_json::Value, state: &str) -> bool {
    status["runs"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|r| r["state"] == state))
}

/// Jobs Slurm has (squeue) whose name starts with `prefix`: `(job id, state)`.
pub fn squeue_jobs(prefix: &str) -> Result<Vec<(String, String)>> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i|%T|%j"])
        .output()
        .context("squeue")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(3, '|').collect();
            (f.len() == 3 && f[2].starts_with(prefix)).then(|| (f[0].to_owned(), f[1].to_owned()))
        })
        .collect())
}

/// A listing of every file under `dir` with its content hash: compares ledgers before/after.
pub fn tree_digest(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = fs_err::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if p.is_dir() && !p.is_symlink() {
                out.push((rel.clone(), "dir".into()));
                walk(base, &p, out);
            } else {
                let h = sftctl_ledger::io::sha256_file(&p).unwrap_or_default();
                out.push((rel, h));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A minimal spec for the fake payload.
pub fn spec_text(name: &str, extra: &str) -> String {
    format!(
        "[sweep]\nname = \"{name}\"\nledger = \"ledger\"\n[model]\npath = \"model\"\n[run]\nbinary = \"./fake-train.sh\"\n[slurm]\ntime = \"5\"\n{extra}"
    )
}

/// Pids of live processes (not zombies, not this one) whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs_err::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Whether the killed or requeued instance of Slurm job `job` of run directory `run` is gone
/// from its node: no process of the run (its trainer) and no step daemon of the job. Ending
/// Slurm's requeue delay (`scontrol update StartTime=now`) before that lets Slurm start the job
/// again while the old instance still runs: on the same node the start fails ("Job credential
/// revoked", or "Duplicate jobid" and a drained node); callers wait one more second after it
/// for the slurmd's own cleanup.
pub fn old_instance_gone(run: &Path, job: &str) -> bool {
    let run_id = run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = job.split('_').next().unwrap_or(job);
    let stepd = format!("slurmstepd: [{base}.");
    processes_with(&run_id).is_empty() && processes_with(&stepd).is_empty()
}

/// The bundled quickstart as a test sweep: a sandbox (owned by the test user when `as_user`)
/// holding a copy of `examples/`, whose `examples/quickstart.toml` is renamed `name`, shrunk to
/// one grid point (lr 3e-3, seed 0) and one thread (the local executor and a one-CPU Slurm
/// allocation then compute the same sums in the same order), with `edits` applied (each `from`
/// must occur in the file: a changed example fails loudly here) and `extra` appended. Returns
/// the sandbox and the spec's path relative to it.
pub fn quickstart_sweep(
    name: &str,
    as_user: bool,
    edits: &[(&str, String)],
    extra: &str,
) -> (Sandbox, String) {
    let sb = Sandbox::with_examples(as_user);
    let mut text = fs_err::read_to_string(repo().join("examples/quickstart.toml")).unwrap();
    let base = [
        (
            "name = \"quickstart\"\nledger",
            format!("name = \"{name}\"\nledger"),
        ),
        (
            "lr = [1e-3, 3e-3]\nseed = [0, 1]",
            "lr = [3e-3]\nseed = [0]".to_owned(),
        ),
    ];
    for (from, to) in base
        .iter()
        .map(|(f, t)| (*f, t))
        .chain(edits.iter().map(|(f, t)| (*f, t)))
    {
        assert!(
            text.contains(from),
            "examples/quickstart.toml no longer contains `{from}`: update this test"
        );
        text = text.replacen(from, to, 1);
    }
    text.push_str("\n[env]\nvars = { RAYON_NUM_THREADS = \"1\" }\n");
    text.push_str(extra);
    let spec = "examples/quickstart.toml".to_owned();
    sb.write(&spec, &text);
    (sb, spec)
}

/// The one run directory of sweep `name` in a [`quickstart_sweep`] sandbox's ledger.
pub fn only_run_dir(sb: &Sandbox, name: &str) -> PathBuf {
    let runs = sb.path().join("ledger-data/sweeps").join(name).join("runs");
    let dirs: Vec<PathBuf> = fs_err::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// Every job log of a run, in name order (for failure messages and what the jobs printed).
pub fn job_logs(run: &Path) -> String {
    let mut out = String::new();
    if let Ok(rd) = fs_err::read_dir(run.join("logs")) {
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            out += &format!("== {}\n", p.display());
            out += &fs_err::read_to_string(&p).unwrap_or_default();
        }
    }
    out
}

/// Records of a JSON-lines file (empty when it does not exist yet); a line that does not parse
/// (a record being appended) is skipped.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    fs_err::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}
