//! Security of the ledger: names cannot leave the ledger root, links planted in a ledger do not
//! redirect writes, files are never world-writable and follow the umask otherwise (run as the
//! unprivileged user `sftctl-test`: root ignores file modes), and secrets in the environment
//! are not written into scripts, records or logs. Reproduce with
//! `cargo test -p sftctl-tests --test security_ledger` (as root, for the user switch).

use sftctl_ledger::*;
use sftctl_tests::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SECRET: &str = "hf_sftctlTestSecret9f8e7d6c5b4a";

/// Runs sftctl as the test user (when root) with `umask` and the secret in the environment.
fn sftctl_as(sb: &Sandbox, umask: &str, args: &[&str]) -> Output {
    let mut c = if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", TEST_USER, "--"]);
        c
    } else {
        Command::new("env")
    };
    c.args(["sh", "-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
        .arg(sftctl_bin())
        .args(args)
        .env("HF_TOKEN", SECRET)
        .env("HUGGING_FACE_HUB_TOKEN", SECRET)
        .current_dir(sb.path())
        .stdin(Stdio::null());
    c.output().unwrap()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Submits a two-point local sweep with the given umask and checks every mode in the ledger.
fn modes_under_umask(umask: u32) {
    let sb = Sandbox::new(nix::unistd::Uid::effective().is_root());
    sb.write(
        "sweep.toml",
        &spec_text("perm", "[sweep]\n")
            .replace("[sweep]\nname", "[sweep]\nexecutor = \"local\"\nname")
            .replace(
                "[slurm]\ntime = \"5\"\n[sweep]\n",
                "[grid]\nseed = [0, 1]\n",
            ),
    );
    let o = sftctl_as(
        &sb,
        &format!("{umask:03o}"),
        &["submit", "sweep.toml", "--wait"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(SECRET));
    let mut all = Vec::new();
    walk(&sb.path().join("ledger"), &mut all);
    assert!(all.len() > 20, "{all:?}");
    let mut files = 0;
    for p in &all {
        let m = std::fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o002,
            0,
            "{} is world-writable ({mode:o}, umask {umask:03o})",
            p.display()
        );
        // Everything else the umask allows: group read stays (the sharing model), and
        // nothing is more open than the umask lets it be.
        assert_eq!(
            mode & umask & !0o002,
            0,
            "{} ignores umask {umask:03o}: {mode:o}",
            p.display()
        );
        if umask & 0o040 == 0 {
            assert_ne!(
                mode & 0o040,
                0,
                "{} not group-readable ({mode:o})",
                p.display()
            );
        }
        if m.is_file() {
            files += 1;
            let body = std::fs::read(p).unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains(SECRET),
                "{} holds the secret from the environment",
                p.display()
            );
        }
        if nix::unistd::Uid::effective().is_root() {
            let uid = nix::unistd::User::from_name(TEST_USER)
                .unwrap()
                .unwrap()
                .uid;
            assert_eq!(
                m.uid(),
                uid.as_raw(),
                "{} not owned by the user",
                p.display()
            );
        }
    }
    assert!(files > 10);
}

#[test]
fn ledger_modes_follow_the_umask_and_are_never_world_writable() {
    for umask in [0o000, 0o002, 0o022, 0o027, 0o077] {
        modes_under_umask(umask);
    }
}

#[test]
fn names_cannot_leave_the_ledger_root() {
    let sb = Sandbox::new(nix::unistd::Uid::effective().is_root());
    sb.write(
        "sweep.toml",
        &spec_text("ok", "").replace("[sweep]\nname", "[sweep]\nexecutor = \"local\"\nname"),
    );
    let o = sftctl_as(&sb, "022", &["submit", "sweep.toml", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = tree_digest(sb.path());
    // A name on the command line is looked up among the ledger's sweeps and runs, never joined.
    for args in [
        vec!["status", "../../../etc", "--ledger", "ledger"],
        vec!["status", "/etc", "--ledger", "ledger"],
        vec!["logs", "../../../../etc/passwd", "--ledger", "ledger"],
        vec!["logs", "/etc/passwd", "--ledger", "ledger"],
        vec!["cancel", "../ok", "--ledger", "ledger"],
        vec!["cancel", "../../..", "--ledger", "ledger"],
    ] {
        let o = sftctl_as(&sb, "022", &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("root:"), "{args:?} printed /etc/passwd");
    }
    assert_eq!(tree_digest(sb.path()), before);

    // The library refuses names with `..` or a root, whoever calls it.
    let l = Ledger::at(sb.path().join("ledger"));
    for bad in ["../evil", "/tmp/evil", "..", "a/../../evil"] {
        let rec = l.sweep("ok").read_sweep().unwrap().unwrap();
        let e = l.sweep(bad).write_sweep(&rec).unwrap_err();
        assert!(matches!(e, Error::Escape { .. }), "{bad}: {e}");
        let e = l
            .sweep("ok")
            .run(bad)
            .write_config(&serde_json::json!({}))
            .unwrap_err();
        assert!(matches!(e, Error::Escape { .. }), "{bad}: {e}");
    }
    assert!(!sb.path().join("evil").exists() && !Path::new("/tmp/evil").exists());
}

#[test]
fn links_planted_in_the_ledger_do_not_redirect_writes() {
    let sb = Sandbox::new(nix::unistd::Uid::effective().is_root());
    let victim = sb.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep").unwrap();
    let chown = || {
        if nix::unistd::Uid::effective().is_root() {
            Command::new("chown")
                .args(["-hR", TEST_USER])
                .arg(sb.path())
                .status()
                .unwrap();
        }
    };
    let spec = spec_text("s", "[grid]\nseed = [0, 1]\n")
        .replace("[sweep]\nname", "[sweep]\nexecutor = \"local\"\nname");
    sb.write("sweep.toml", &spec);
    let plan: serde_json::Value =
        serde_json::from_slice(&sftctl_as(&sb, "022", &["plan", "sweep.toml", "--json"]).stdout)
            .unwrap();
    let ids: Vec<String> = plan["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    let sweep = sb.path().join("ledger/sweeps/s");
    let plant = |link: &Path, to: &Path| {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(to, link).unwrap();
        chown();
    };
    let refused = |what: &str| {
        let o = sftctl_as(&sb, "022", &["submit", "sweep.toml", "--wait"]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", text(&o));
        assert!(text(&o).contains("symbolic link"), "{what}: {}", text(&o));
        let mut inside = Vec::new();
        walk(&victim, &mut inside);
        assert_eq!(
            inside,
            vec![victim.join("precious")],
            "{what}: wrote through the link"
        );
        assert_eq!(
            std::fs::read_to_string(victim.join("precious")).unwrap(),
            "keep"
        );
    };
    // The sweep directory, the runs directory and one run directory, each a planted link.
    plant(&sweep, &victim);
    refused("sweeps/s");
    std::fs::remove_file(&sweep).unwrap();
    plant(&sweep.join("runs"), &victim);
    refused("runs");
    std::fs::remove_file(sweep.join("runs")).unwrap();
    plant(&sweep.join("runs").join(&ids[1]), &victim);
    refused("runs/<id>");
    std::fs::remove_file(sweep.join("runs").join(&ids[1])).unwrap();
    // A log replaced by a link to a file: the append is refused (O_NOFOLLOW).
    plant(
        &sweep.join("runs").join(&ids[0]).join("submissions.jsonl"),
        &victim.join("precious"),
    );
    refused("submissions.jsonl");
    std::fs::remove_file(sweep.join("runs").join(&ids[0]).join("submissions.jsonl")).unwrap();
    // With the links gone the same submit works.
    let o = sftctl_as(&sb, "022", &["submit", "sweep.toml", "--wait"]);
    assert!(o.status.success(), "{}", text(&o));

    // The job side: a link in place of a rank's event log or metrics log is not followed.
    let run = sweep.join("runs").join(&ids[0]);
    for log in ["events/rank-3.jsonl", "metrics.jsonl"] {
        let p = run.join(log);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(victim.join("precious"), &p).unwrap();
        let rank = if log.starts_with("events") { 3 } else { 0 };
        let e = RunWriter::open(&run, rank, None).unwrap_err();
        assert!(
            e.to_string().contains(log.split('/').next_back().unwrap()),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(victim.join("precious")).unwrap(),
            "keep"
        );
        std::fs::remove_file(&p).unwrap();
    }
    // A temporary name planted ahead of an atomic write is not followed either.
    let doc = run.join("eval/x.json");
    std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
    io::write_json_atomic(&doc, &serde_json::json!({"a": 1})).unwrap();
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep"
    );
}

#[test]
fn secrets_in_the_environment_stay_out_of_the_slurm_path() {
    let Some(_lock) = lock_cluster() else { return };
    let sb = Sandbox::new(true);
    sb.write("sweep.toml", &spec_text("sec", "[grid]\nseed = [0, 1]\n"));
    let o = sftctl_as(&sb, "000", &["submit", "sweep.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(SECRET));
    let st = sb
        .wait_for("sweep.toml", std::time::Duration::from_secs(120), |s| {
            all_in(s, "completed")
        })
        .unwrap();
    assert_eq!(st["runs"].as_array().unwrap().len(), 2);
    let mut all = Vec::new();
    walk(&sb.path().join("ledger"), &mut all);
    let mut logs = 0;
    for p in &all {
        let m = std::fs::symlink_metadata(p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        // Slurm applies the submitter's umask (SLURM_UMASK) to the job and its output.
        assert_eq!(
            m.permissions().mode() & 0o002,
            0,
            "{} is world-writable",
            p.display()
        );
        if m.is_file() {
            logs += p.to_string_lossy().contains("slurm-") as usize;
            assert!(
                !String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains(SECRET),
                "{} holds the secret",
                p.display()
            );
        }
    }
    assert_eq!(logs, 2, "{all:?}");
}
