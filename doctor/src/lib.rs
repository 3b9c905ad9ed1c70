//! Environment checks run before any training time is spent (`sftctl doctor` on the login node,
//! `sftctl-train doctor` and the start of a CUDA run inside the job): glibc, libtorch and its
//! version, the NVIDIA driver, visible GPUs, NCCL and MPI libraries. Reads files and the
//! environment only; no tensor library, so the login node can use it.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What the run will need, which decides whether a missing piece is a problem or a note.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// libtorch (the `tch` backends).
    pub libtorch: bool,
    /// CUDA GPUs.
    pub cuda: bool,
    /// NCCL (data parallel on GPUs).
    pub nccl: bool,
    /// MPI (more than one rank).
    pub mpi: bool,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    /// `true` when this blocks the run.
    pub problem: bool,
    /// `false` when the thing checked is absent (a problem only if the run needs it).
    pub found: bool,
    pub detail: String,
}

/// Where the checks look: the environment, injectable for tests.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Directories searched for shared libraries (`LD_LIBRARY_PATH`, then the system's).
    pub lib_dirs: Vec<PathBuf>,
    /// `/proc/driver/nvidia/version`.
    pub driver_file: PathBuf,
    /// `/dev`, where `nvidia0`, `nvidia1`... appear.
    pub dev_dir: PathBuf,
    /// `CUDA_VISIBLE_DEVICES`.
    pub cuda_visible: Option<String>,
    /// glibc's version (`getconf GNU_LIBC_VERSION`), when known.
    pub glibc: Option<String>,
}

/// The oldest glibc the release binaries run on (docs/gpu.md).
pub const MIN_GLIBC: (u32, u32) = (2, 34);

impl Probe {
    /// This machine.
    pub fn system() -> Probe {
        let mut lib_dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        for d in [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/lib",
            "/usr/local/cuda/lib64",
            "/usr/lib/x86_64-linux-gnu/openmpi/lib",
        ] {
            lib_dirs.push(PathBuf::from(d));
        }
        // `getconf` is the portable way to ask glibc its version without linking to it.
        let glibc = std::process::Command::new("getconf")
            .arg("GNU_LIBC_VERSION")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Probe {
            lib_dirs,
            driver_file: PathBuf::from("/proc/driver/nvidia/version"),
            dev_dir: PathBuf::from("/dev"),
            cuda_visible: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            glibc,
        }
    }

    /// The first file in the library directories whose name starts with `prefix` (`libnccl.so`).
    pub fn find_lib(&self, prefix: &str) -> Option<PathBuf> {
        self.lib_dirs.iter().find_map(|d| {
            let mut names: Vec<PathBuf> = fs_err::read_dir(d)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect();
            names.sort();
            names.into_iter().next()
        })
    }

    /// GPU device files the process may use (`/dev/nvidiaN`, filtered by
    /// `CUDA_VISIBLE_DEVICES` when it lists indices).
    pub fn visible_gpus(&self) -> usize {
        let present: Vec<u32> = fs_err::read_dir(&self.dev_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_prefix("nvidia")?
                            .parse::<u32>()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        match self.cuda_visible.as_deref().map(str::trim) {
            None => present.len(),
            Some("") | Some("-1") => 0,
            Some(list) => list
                .split(',')
                .filter(|s| match s.trim().parse::<u32>() {
                    Ok(i) => present.contains(&i),
                    // UUIDs: count them when any device exists.
                    Err(_) => !present.is_empty(),
                })
                .count(),
        }
    }
}

fn libtorch_version(lib: &Path) -> Option<String> {
    // pip's torch: <site-packages>/torch/lib/libtorch_cpu.so beside <...>/torch/version.py.
    let text = fs_err::read_to_string(lib.parent()?.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim_matches(['\'', '"']).to_string())
}

fn parse_glibc(v: &str) -> Option<(u32, u32)> {
    let num = v.split_whitespace().last()?;
    let mut it = num.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Every check, in order; each problem says what to do.
pub fn check(probe: &Probe, needs: Needs) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |check, problem, detail: String| {
        out.push(Finding {
            check,
            problem,
            found: true,
            detail,
        })
    };
    let mut absent = Vec::new();
    match probe.glibc.as_deref() {
        Some(v) => match parse_glibc(v) {
            Some(ver) if ver < MIN_GLIBC => push(
                "glibc",
                true,
                format!(
                    "`{v}` is older than {}.{} that the binaries need; build sftctl-train on this system",
                    MIN_GLIBC.0, MIN_GLIBC.1
                ),
            ),
            _ => push("glibc", false, v.to_string()),
        },
        None => push(
            "glibc",
            false,
            "unknown (not glibc, or no `getconf`)".into(),
        ),
    }
    match probe.find_lib("libtorch_cpu.so") {
        Some(lib) => {
            let version = libtorch_version(&lib).unwrap_or_else(|| "version unknown".into());
            push(
                "libtorch",
                false,
                format!("{version} at `{}`", lib.display()),
            );
        }
        None => push(
            "libtorch",
            needs.libtorch || {
                absent.push("libtorch");
                false
            },
            "libtorch_cpu.so not found; hint: LD_LIBRARY_PATH=<python site-packages>/torch/lib"
                .into(),
        ),
    }
    match fs_err::read_to_string(&probe.driver_file) {
        Ok(text) => {
            let first = text.lines().next().unwrap_or_default();
            let version = first
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
                .unwrap_or(first);
            push("nvidia driver", false, version.to_string());
        }
        Err(_) => push(
            "nvidia driver",
            needs.cuda || {
                absent.push("nvidia driver");
                false
            },
            format!(
                "`{}` is missing: no NVIDIA driver loaded",
                probe.driver_file.display()
            ),
        ),
    }
    let gpus = probe.visible_gpus();
    if gpus == 0 {
        absent.push("gpus visible");
    }
    push(
        "gpus visible",
        needs.cuda && gpus == 0,
        if gpus == 0 {
            format!(
                "none (CUDA_VISIBLE_DEVICES={}); hint: ask Slurm for GPUs (--gpus-per-node)",
                probe.cuda_visible.as_deref().unwrap_or("unset")
            )
        } else {
            gpus.to_string()
        },
    );
    for (check, prefix, needed, hint) in [
        (
            "nccl",
            "libnccl.so",
            needs.nccl,
            "pip install nvidia-nccl-cu13, or load the cluster's nccl module",
        ),
        (
            "mpi",
            "libmpi.so",
            needs.mpi,
            "load the cluster's MPI module (Debian: libopenmpi3)",
        ),
    ] {
        match probe.find_lib(prefix) {
            Some(p) => push(check, false, format!("`{}`", p.display())),
            None => {
                absent.push(check);
                push(check, needed, format!("{prefix}* not found; hint: {hint}"))
            }
        }
    }
    for f in &mut out {
        f.found = f.problem || !absent.contains(&f.check);
        if f.problem {
            f.found = false;
        }
    }
    out
}

/// The findings as lines for a terminal: `ok`/`PROBLEM`, the check, the detail.
pub fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{:<8} {:<14} {}\n",
                match (f.problem, f.found) {
                    (true, _) => "PROBLEM",
                    (false, true) => "ok",
                    (false, false) => "absent",
                },
                f.check,
                f.detail
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(root: &Path) -> Probe {
        Probe {
            lib_dirs: vec![root.join("lib")],
            driver_file: root.join("driver"),
            dev_dir: root.join("dev"),
            cuda_visible: None,
            glibc: Some("glibc 2.36".into()),
        }
    }

    fn problems(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.problem).map(|f| f.check).collect()
    }

    #[test]
    fn a_bare_machine_fails_only_what_the_run_needs() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path());
        assert!(problems(&check(&p, Needs::default())).is_empty());
        let all = Needs {
            libtorch: true,
            cuda: true,
            nccl: true,
            mpi: true,
        };
        assert_eq!(
            problems(&check(&p, all)),
            ["libtorch", "nvidia driver", "gpus visible", "nccl", "mpi"]
        );
        let old = Probe {
            glibc: Some("glibc 2.31".into()),
            ..p
        };
        assert_eq!(problems(&check(&old, Needs::default())), ["glibc"]);
    }

    #[test]
    fn a_gpu_machine_passes_and_reports_versions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["lib", "dev", "torch/lib"] {
            fs_err::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "lib/libnccl.so.2",
            "lib/libmpi.so.40",
            "torch/lib/libtorch_cpu.so",
            "dev/nvidia0",
            "dev/nvidia1",
            "dev/nvidiactl",
        ] {
            fs_err::write(root.join(f), "").unwrap();
        }
        fs_err::write(
            root.join("torch/version.py"),
            "__version__ = '2.11.0+cu130'\n",
        )
        .unwrap();
        fs_err::write(
            root.join("driver"),
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Release Build\n",
        )
        .unwrap();
        let mut p = probe(root);
        p.lib_dirs.push(root.join("torch/lib"));
        let all = Needs {
            libtorch: true,
            cuda: true,
            nccl: true,
            mpi: true,
        };
        let f = check(&p, all);
        assert!(problems(&f).is_empty(), "{f:?}");
        let text = render(&f);
        assert!(text.contains("2.11.0+cu130"), "{text}");
        assert!(text.contains("580.95.05"), "{text}");
        assert!(text.contains("gpus visible   2"), "{text}");
        p.cuda_visible = Some("1".into());
        assert_eq!(p.visible_gpus(), 1);
        p.cuda_visible = Some("".into());
        assert_eq!(problems(&check(&p, all)), ["gpus visible"]);
    }
}
