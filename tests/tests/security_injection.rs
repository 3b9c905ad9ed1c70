//! Security: no value of a sweep spec can inject shell code into a batch script. Hostile
//! strings go into every free-form field (paths, module names, the venv, environment values,
//! command words, the ledger root); the rendered scripts must pass `bash -n`, run without
//! executing any of it (a canary file stays absent), and hand each value to the job verbatim.
//! Fields that land in `#SBATCH` lines must be rejected instead. Reproduce with
//! `cargo test -p sftctl-tests --test security_injection`.

use sftctl_tests::*;
use std::path::Path;
use std::process::Command;

/// Hostile payloads: each would create `canary` if a shell evaluated it.
fn payloads(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("'; touch {c}; '"),
        format!("\"; touch {c}; \""),
        format!("x\ntouch {c}\n"),
        format!("x\r\ntouch {c} #"),
        format!("a;touch {c}"),
        format!("a&&touch {c}|"),
        format!("${{IFS}}touch${{IFS}}{c}"),
        format!("*\\'\"\t$HOME {c}"),
        format!("#\n#SBATCH --wrap=touch {c}\ntouch {c}"),
        // Globs and tildes must not expand: the run directory holds `job.sh`.
        "job.s[h]".to_owned(),
        "j*.sh".to_owned(),
        "~".to_owned(),
    ]
}

/// A TOML basic string holding `s` exactly (JSON string escapes are valid TOML escapes).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn toml_list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", ")
    )
}

fn scripts(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "sh") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn hostile_spec_values_reach_the_job_verbatim_and_run_nothing() {
    let sb = Sandbox::new(false);
    let canary = sb.path().join("PWNED");
    let hostile = payloads(&canary);
    // The job prints its arguments and two environment values, one per line, NUL-separated.
    let mut command = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "printf '%s\\0' \"$@\" \"$HOSTILE\" \"$SECOND\" > \"$SFTCTL_RUN_DIR/job-saw\"".to_owned(),
        "sh".to_owned(),
    ];
    command.extend(hostile.iter().cloned());
    let vars = format!(
        "{{ HOSTILE = {}, SECOND = {} }}",
        toml_str(&hostile.join("|")),
        toml_str(&hostile[4])
    );
    let spec = format!(
        "[sweep]\nname = \"inj\"\nledger = \"ledger\"\nexecutor = \"local\"\n\
         [model]\npath = {model}\n[[data]]\nname = {dname}\npath = {dpath}\n\
         [run]\ncommand = {command}\n[env]\nmodules = {modules}\nvenv = {venv}\nvars = {vars}\n",
        model = toml_str(&hostile[0]),
        dname = toml_str(&hostile[2]),
        dpath = toml_str(&hostile[1]),
        command = toml_list(&command),
        modules = toml_list(&hostile[..3]),
        venv = toml_str(&hostile[5]),
    );
    sb.write("sweep.toml", &spec);
    sb.ok(&["plan", "sweep.toml"]);
    sb.ok(&["submit", "sweep.toml", "--wait"]);

    let all = scripts(sb.path());
    assert!(!all.is_empty());
    for s in &all {
        let out = Command::new("bash").arg("-n").arg(s).output().unwrap();
        assert!(
            out.status.success(),
            "`bash -n {}`: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // sbatch reads directives until the first line that is neither a comment nor blank:
        // none of that header may carry hostile text.
        let text = std::fs::read_to_string(s).unwrap();
        let header = text
            .lines()
            .skip(1)
            .take_while(|l| l.trim().is_empty() || l.starts_with('#'));
        for l in header {
            if let Some(rest) = l.strip_prefix("#SBATCH ") {
                assert!(
                    !rest.contains("touch"),
                    "{}: hostile text in `{l}`",
                    s.display()
                );
            }
        }
    }
    assert!(!canary.exists(), "a spec value was executed as shell code");
    let ledger = sb.path().join("ledger");
    let run = std::fs::read_dir(ledger.join("sweeps/inj/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let got = std::fs::read(run.join("job-saw")).unwrap();
    let got: Vec<String> = got
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut want = hostile.clone();
    want.push(hostile.join("|"));
    want.push(hostile[4].clone());
    assert_eq!(got, want, "the job did not receive the values verbatim");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert!(
        cfg["model"]["path"]
            .as_str()
            .unwrap()
            .ends_with(&hostile[0])
    );
}

#[test]
fn values_bound_for_sbatch_lines_are_rejected_and_nothing_is_written() {
    let sb = Sandbox::new(false);
    let cases: &[(&str, &str)] = &[
        (
            "[slurm]\npartition = \"gpu\\n#SBATCH --wrap=id\"",
            "slurm.partition",
        ),
        ("[slurm]\naccount = \"a b\"", "slurm.account"),
        ("[slurm]\nqos = \"$(id)\"", "slurm.qos"),
        ("[slurm]\nconstraint = \"a'b\"", "slurm.constraint"),
        ("[slurm]\nmem = \"4G;id\"", "slurm.mem"),
        ("[slurm]\nextra = [\"--comment=a\\nid\"]", "slurm.extra"),
        ("[slurm]\nextra = [\"--x=1 --wrap=id\"]", "slurm.extra"),
        ("[slurm]\nextra = [\"-x\"]", "slurm.extra"),
        ("[slurm]\ntime = \"1:00\\nid\"", "slurm.time"),
        ("[env]\nvars = { \"A;id\" = \"1\" }", "env.vars"),
        ("[env]\nvars = { \"A\\nB\" = \"1\" }", "env.vars"),
    ];
    for (i, (extra, key)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let spec = format!(
            "[sweep]\nname = \"{name}\"\nledger = \"ledger\"\n[model]\npath = \"m\"\n[run]\ncommand = [\"true\"]\n{extra}\n"
        );
        sb.write("s.toml", &spec);
        let o = sb.sftctl(&["submit", "s.toml"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra}: {err}");
        assert!(
            err.contains(key) && err.contains("s.toml:"),
            "{extra}: {err}"
        );
        assert!(
            !sb.path().join("ledger").exists(),
            "{extra}: ledger written"
        );
    }
    // The ledger root lands in `#SBATCH --output`: only plain paths.
    for bad in ["led ger", "a\nb", "a'b", "x%j", "$(id)"] {
        let spec = format!(
            "[sweep]\nname = \"s\"\nledger = {}\n[model]\npath = \"m\"\n[run]\ncommand = [\"true\"]\n",
            toml_str(bad)
        );
        sb.write("s.toml", &spec);
        let o = sb.sftctl(&["submit", "s.toml", "--executor", "local"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {err}");
        assert!(err.contains("ledger root"), "{bad:?}: {err}");
        assert_eq!(
            std::fs::read_dir(sb.path()).unwrap().count(),
            2,
            "{bad:?}: something was written"
        );
    }
    // Sweep names become directories: nothing that could leave `sweeps/`.
    for bad in [
        "../up", "/abs", "..", ".", ".hidden", "a/b", "a\nb", "", "a b",
    ] {
        let spec = format!(
            "[sweep]\nname = {}\nledger = \"ledger\"\n[model]\npath = \"m\"\n[run]\ncommand = [\"true\"]\n",
            toml_str(bad)
        );
        sb.write("s.toml", &spec);
        let o = sb.sftctl(&["submit", "s.toml", "--executor", "local"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{bad:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !sb.path().join("ledger").exists(),
            "{bad:?}: ledger written"
        );
        assert!(!sb.path().join("up").exists());
    }
}
