//! Batch scripts from minijinja templates. Undefined variables are errors (so a template that
//! uses something the plan does not define fails at plan time), and every interpolated value is
//! shell-quoted unless it is a plain word: no spec value can inject shell code.

use crate::quote::shell_quote;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

/// The default template, `templates/job.sh.j2`, compiled in.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/job.sh.j2");
/// The default evaluation-job template, `templates/eval.sh.j2`, compiled in.
pub const DEFAULT_EVAL_TEMPLATE: &str = include_str!("../../templates/eval.sh.j2");

/// Everything an evaluation-job template may use.
#[derive(Debug, Clone, Serialize)]
pub struct EvalJobContext {
    pub sftctl_version: String,
    pub sweep: String,
    pub run_id: String,
    pub run_name: String,
    pub run_dir: String,
    /// The evaluation's name.
    pub eval: String,
    pub log: String,
    pub job_name: String,
    pub gpus_per_node: u32,
    pub cpus_per_task: u32,
    pub time: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub mem: Option<String>,
    pub extra: Vec<String>,
    pub modules: Vec<String>,
    pub venv: Option<String>,
    pub vars: Vec<(String, String)>,
    /// `sftctl-train eval-job RUN_DIR --eval NAME`; `{{ command|argv }}` quotes each word.
    pub command: Vec<String>,
}

/// Everything a template may use.
#[derive(Debug, Clone, Serialize)]
pub struct JobContext {
    pub sftctl_version: String,
    pub sweep: String,
    pub run_id: String,
    pub run_name: String,
    pub run_dir: String,
    /// `--output` path (inside the run's `logs/`).
    pub log: String,
    pub job_name: String,
    /// 0 for an unphased run.
    pub phase: u32,
    pub nodes: u32,
    pub gpus_per_node: u32,
    /// Ranks per node (one per GPU on GPUs); the world size is `nodes * ranks_per_node`.
    pub ranks_per_node: u32,
    pub cpus_per_task: u32,
    pub time: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub constraint: Option<String>,
    pub mem: Option<String>,
    pub extra: Vec<String>,
    pub signal_seconds: u32,
    pub modules: Vec<String>,
    pub venv: Option<String>,
    pub vars: Vec<(String, String)>,
    /// The job's argv, placeholders replaced; `{{ command|argv }}` quotes each word.
    pub command: Vec<String>,
    /// `sftctl-train post-mortem RUN_DIR` (empty when the command is not sftctl-train's): run
    /// by a multi-rank job after its launcher fails, it records which rank was lost.
    pub post_mortem: Vec<String>,
}

/// A compiled template.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Compiles `text` (named `name` in errors).
    pub fn new(name: &str, text: String) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_formatter(|out, _state, value| {
            let text = if value.is_safe() {
                value.to_string()
            } else {
                shell_quote(&value.to_string())
            };
            out.write_str(&text)
                .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "writing the script"))
        });
        env.add_filter("argv", |words: Vec<String>| {
            Value::from_safe_string(
                words
                    .iter()
                    .enumerate()
                    // A first word with `=` would be a variable assignment, not the command.
                    .map(|(i, w)| match i == 0 && w.contains('=') {
                        true => format!("'{}'", w.replace('\'', r"'\''")),
                        false => shell_quote(w),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        });
        env.add_template_owned(name.to_owned(), text)
            .map_err(|e| format!("template `{name}`: {e:#}"))?;
        Ok(Self { env })
    }

    /// The default template.
    pub fn default_template() -> Self {
        Self::new("job.sh.j2", DEFAULT_TEMPLATE.to_owned()).expect("the built-in template compiles")
    }

    /// The default evaluation-job template.
    pub fn default_eval_template() -> Self {
        Self::new("eval.sh.j2", DEFAULT_EVAL_TEMPLATE.to_owned())
            .expect("the built-in template compiles")
    }

    /// Renders the script of one job (a [`JobContext`] or an [`EvalJobContext`]).
    pub fn render<C: Serialize>(&self, ctx: &C) -> Result<String, String> {
        let name = self
            .env
            .templates()
            .next()
            .map(|(n, _)| n.to_owned())
            .unwrap_or_default();
        let t = self.env.get_template(&name).map_err(|e| e.to_string())?;
        t.render(ctx).map_err(|e| {
            let mut msg = format!("template `{name}`: {e}");
            if let Some(line) = e.line() {
                msg = format!("template `{name}` line {line}: {e}");
            }
            msg
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ctx() -> JobContext {
        JobContext {
            sftctl_version: "0".into(),
            sweep: "s".into(),
            run_id: "abc".into(),
            run_name: "lr=1e-5".into(),
            run_dir: "/l/runs/abc".into(),
            log: "/l/runs/abc/logs/slurm-%j.out".into(),
            job_name: "sft.s.abc".into(),
            phase: 0,
            nodes: 1,
            gpus_per_node: 0,
            ranks_per_node: 1,
            cpus_per_task: 1,
            time: "00:10:00".into(),
            partition: Some("debug".into()),
            account: None,
            qos: None,
            constraint: None,
            mem: None,
            extra: vec![],
            signal_seconds: 120,
            modules: vec!["cuda/12; rm -rf ~".into()],
            venv: Some("/opt/my venv".into()),
            vars: vec![("HF_HOME".into(), "$(curl evil)".into())],
            command: vec![
                "/bin/train".into(),
                "run".into(),
                "/l/runs/abc".into(),
                "it's".into(),
            ],
            post_mortem: vec![
                "/bin/train".into(),
                "post-mortem".into(),
                "/l/runs/abc".into(),
            ],
        }
    }

    #[test]
    fn default_template_quotes_every_value() {
        let s = Renderer::default_template().render(&ctx()).unwrap();
        assert!(s.contains("#SBATCH --partition=debug\n"), "{s}");
        assert!(s.contains("#SBATCH --signal=B:USR1@120\n"));
        assert!(s.contains("module load 'cuda/12; rm -rf ~'\n"), "{s}");
        assert!(s.contains("source '/opt/my venv'/bin/activate\n"), "{s}");
        assert!(s.contains("export HF_HOME='$(curl evil)'\n"), "{s}");
        assert!(s.contains(r"/bin/train run /l/runs/abc 'it'\''s' &"), "{s}");
        assert!(!s.contains("#SBATCH --account"));
        assert!(!s.contains("srun"));
        assert!(
            !s.contains("post-mortem"),
            "one rank records its own errors: {s}"
        );
        let mut c = ctx();
        c.nodes = 2;
        let s = Renderer::default_template().render(&c).unwrap();
        assert!(s.contains("#SBATCH --ntasks-per-node=1\n"), "{s}");
        assert!(
            s.contains("mpirun --tag-output --bind-to none -np 2 --map-by ppr:1:node /bin/train"),
            "{s}"
        );
        c.ranks_per_node = 2;
        let s = Renderer::default_template().render(&c).unwrap();
        assert!(s.contains("#SBATCH --ntasks-per-node=2\n"), "{s}");
        assert!(s.contains("-np 4 --map-by ppr:2:node"), "{s}");
        // A failed launcher is followed by the post-mortem, with where this attempt's log began.
        assert!(
            s.contains("/bin/train post-mortem /l/runs/abc --exit-status \"$rc\" --log \"$log_file\" --log-offset \"$log_start\""),
            "{s}"
        );
        c.gpus_per_node = 4;
        c.ranks_per_node = 4;
        let s = Renderer::default_template().render(&c).unwrap();
        assert!(!s.contains("mpirun"), "{s}");
        assert!(
            s.contains("srun --label --ntasks-per-node=4 --kill-on-bad-exit=1 bash -c 'exec \"$@\" --backend \"cuda:$SLURM_LOCALID\"' rank /bin/train run"),
            "{s}"
        );
    }

    #[test]
    fn a_first_word_with_equals_stays_the_command() {
        let mut c = ctx();
        c.command = vec!["A=1".into(), "B=2".into(), "x[1]".into()];
        let s = Renderer::default_template().render(&c).unwrap();
        assert!(s.contains("\n'A=1' B=2 'x[1]' &\n"), "{s}");
    }

    #[test]
    fn eval_template_quotes_every_value() {
        let c = ctx();
        let e = EvalJobContext {
            sftctl_version: c.sftctl_version,
            sweep: c.sweep,
            run_id: c.run_id,
            run_name: c.run_name,
            run_dir: "/l/runs/a b".into(),
            eval: "lm".into(),
            log: "/l/runs/abc/logs/eval-lm-%j.out".into(),
            job_name: "sft.s.abc.lm".into(),
            gpus_per_node: 1,
            cpus_per_task: 4,
            time: "00:30:00".into(),
            partition: Some("gpu".into()),
            account: None,
            qos: None,
            constraint: None,
            mem: None,
            extra: vec![],
            modules: c.modules,
            venv: c.venv,
            vars: c.vars,
            command: vec![
                "/bin/sftctl-train".into(),
                "eval-job".into(),
                "/l/runs/a b".into(),
                "--eval".into(),
                "lm".into(),
            ],
        };
        let s = Renderer::default_eval_template().render(&e).unwrap();
        assert!(s.contains("#SBATCH --gpus-per-node=1\n"), "{s}");
        assert!(s.contains("#SBATCH --cpus-per-task=4\n"), "{s}");
        assert!(s.contains("#SBATCH --partition=gpu\n"), "{s}");
        assert!(s.contains("module load 'cuda/12; rm -rf ~'\n"), "{s}");
        assert!(s.contains("export HF_HOME='$(curl evil)'\n"), "{s}");
        assert!(s.contains("cd '/l/runs/a b' || exit 1\n"), "{s}");
        assert!(
            s.contains("exec /bin/sftctl-train eval-job '/l/runs/a b' --eval lm\n"),
            "{s}"
        );
        assert!(!s.contains("--signal"), "{s}");
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let r = Renderer::new(
            "t.j2",
            "#!/bin/bash\necho {{ nodes }} {{ gpus_total }}\n".into(),
        )
        .unwrap();
        let e = r.render(&ctx()).unwrap_err();
        assert!(e.contains("undefined") && e.contains("line 2"), "{e}");
    }
}
