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
    // The runtime binary runs the evaluation job (`<binary> eval-job RUN_DIR --eval NAME`): this
    // one records what it was given, NUL-separated, and exits.
    sb.write(
        "fake-runtime.sh",
        "#!/bin/sh\nprintf '%s\\0' \"$@\" \"$HOSTILE\" \"$SFTCTL_EVAL\" > \"$SFTCTL_RUN_DIR/eval-saw\"\n",
    );
    let st = Command::new("chmod")
        .arg("+x")
        .arg(sb.path().join("fake-runtime.sh"))
        .status()
        .unwrap();
    assert!(st.success());
    // A command evaluation whose argv carries every payload (but `${IFS}`, whose braces would
    // be read as an unknown placeholder): it lands in config.json, never in a script.
    let mut eval_argv = vec!["/bin/sh".to_owned(), "-c".to_owned()];
    eval_argv.extend(hostile.iter().filter(|h| !h.contains('{')).cloned());
    eval_argv.extend(["{model}".to_owned(), "{output}".to_owned()]);
    let spec = format!(
        "[sweep]\nname = \"inj\"\nledger = \"ledger\"\nexecutor = \"local\"\n\
         [model]\npath = {model}\n[[data]]\nname = {dname}\npath = {dpath}\n\
         [run]\ncommand = {command}\nbinary = \"./fake-runtime.sh\"\n\
         [env]\nmodules = {modules}\nvenv = {venv}\nvars = {vars}\n\
         [[eval]]\nname = \"score\"\nkind = \"command\"\ncommand = {eval_argv}\n",
        model = toml_str(&hostile[0]),
        dname = toml_str(&hostile[2]),
        dpath = toml_str(&hostile[1]),
        command = toml_list(&command),
        modules = toml_list(&hostile[..3]),
        venv = toml_str(&hostile[5]),
        eval_argv = toml_list(&eval_argv),
    );
    sb.write("sweep.toml", &spec);
    sb.ok(&["plan", "sweep.toml"]);
    sb.ok(&["submit", "sweep.toml", "--wait"]);

    let all = scripts(sb.path());
    assert!(!all.is_empty());
    // The evaluation job's script is among them, and carries the hostile environment.
    let eval_script = all
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "eval-score.sh"))
        .unwrap_or_else(|| panic!("no eval-score.sh among {all:?}"));
    let eval_text = std::fs::read_to_string(eval_script).unwrap();
    assert!(
        eval_text.contains("module load") && eval_text.contains("export HOSTILE="),
        "{eval_text}"
    );
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
    // The evaluation job ran (the runtime binary, as `eval-job RUN_DIR --eval score`) with the
    // hostile environment value verbatim.
    let saw = std::fs::read(run.join("eval-saw"))
        .unwrap_or_else(|e| panic!("the evaluation job did not run ({e}):\n{}", job_logs(&run)));
    let saw: Vec<String> = saw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let run_dir = run.canonicalize().unwrap();
    assert_eq!(saw.len(), 6, "{saw:?}");
    assert_eq!(saw[0], "eval-job", "{saw:?}");
    assert_eq!(Path::new(&saw[1]).canonicalize().unwrap(), run_dir);
    assert_eq!(
        saw[2..],
        [
            "--eval".to_owned(),
            "score".to_owned(),
            hostile.join("|"),
            "score".to_owned()
        ],
        "the evaluation job did not receive the values verbatim"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    // The evaluation's argv is recorded verbatim for the runtime, which runs it without a shell.
    let want_argv = serde_json::json!(eval_argv);
    assert!(
        contains_value(&cfg, &want_argv),
        "config.json lacks the evaluation's argv {want_argv}:\n{cfg:#}"
    );
    assert!(
        cfg["model"]["path"]
            .as_str()
            .unwrap()
            .ends_with(&hostile[0])
    );
}

/// A well-formed evaluation's name line.
const EVAL_NAME: &str = "name = \"m\"";

/// An `[[eval]]` table with `name` (a `name = ...` line) and, when `slurm` is not empty, an
/// `[eval.slurm]` table holding it.
fn eval_with(name: &str, slurm: &str) -> String {
    let mut t = format!(
        "[[eval]]\n{name}\nkind = \"command\"\ncommand = [\"x\", \"{{model}}\", \"{{output}}\"]\n"
    );
    if !slurm.is_empty() {
        t += &format!("[eval.slurm]\n{slurm}\n");
    }
    t
}

/// True when `v` or any value nested in it equals `want`.
fn contains_value(v: &serde_json::Value, want: &serde_json::Value) -> bool {
    v == want
        || match v {
            serde_json::Value::Array(a) => a.iter().any(|x| contains_value(x, want)),
            serde_json::Value::Object(o) => o.values().any(|x| contains_value(x, want)),
            _ => false,
        }
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
        // An evaluation's name lands in its script's name, job name and log path.
        (&eval_with("name = \"a;id\"", ""), "evaluation name"),
        (&eval_with("name = \"$(id)\"", ""), "evaluation name"),
        (&eval_with("name = \"a\\nb\"", ""), "evaluation name"),
        (&eval_with("name = \"../up\"", ""), "evaluation name"),
        // `[eval.slurm]` lands in the evaluation job's `#SBATCH` lines.
        (
            &eval_with(EVAL_NAME, "partition = \"gpu\\n#SBATCH --wrap=id\""),
            "eval.slurm.partition",
        ),
        (
            &eval_with(EVAL_NAME, "account = \"a b\""),
            "eval.slurm.account",
        ),
        (&eval_with(EVAL_NAME, "qos = \"$(id)\""), "eval.slurm.qos"),
        (
            &eval_with(EVAL_NAME, "constraint = \"a'b\""),
            "eval.slurm.constraint",
        ),
        (&eval_with(EVAL_NAME, "mem = \"4G;id\""), "eval.slurm.mem"),
        (
            &eval_with(EVAL_NAME, "time = \"1:00\\nid\""),
            "eval.slurm.time",
        ),
        (
            &eval_with(EVAL_NAME, "extra = [\"--x=1 --wrap=id\"]"),
            "eval.slurm.extra",
        ),
        (
            &eval_with(EVAL_NAME, "extra = [\"--comment=a\\nid\"]"),
            "eval.slurm.extra",
        ),
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
