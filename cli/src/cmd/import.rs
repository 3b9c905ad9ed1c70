//! `sftctl import RUN --checkpoint STEP FILE`: attaches scores computed elsewhere to a run's
//! checkpoint as evaluation results in its ledger directory (`eval/<name>.step-<n>.json`).

use crate::args::ImportArgs;
use crate::cmd::find_run;
use crate::report::import::parse;
use crate::user_err;
use sftctl_ledger::results::{read_checkpoints, write_eval_at};
use sftctl_ledger::{EvalResult, Ledger, Timestamp};

pub fn run(a: &ImportArgs) -> anyhow::Result<()> {
    let ledger = Ledger::at(&a.ledger.ledger);
    let (sweep, id) = find_run(&ledger, &a.run)?;
    let dir = sweep.run(&id);
    let step = match a.checkpoint.as_str() {
        "final" => match read_checkpoints(dir.path())?.last() {
            Some(c) => c.step,
            None => {
                return user_err(format!(
                    "run `{id}` has no complete checkpoint; give `--checkpoint STEP`"
                ));
            }
        },
        s => match s.strip_prefix("step-").unwrap_or(s).parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                return user_err(format!(
                    "`--checkpoint {s}`: expected a step, `step-<n>` or `final`"
                ));
            }
        },
    };
    let path = a.file.display().to_string();
    let text = fs_err::read_to_string(&a.file)?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.file
            .file_stem()
            .map_or("imported".into(), |s| s.to_string_lossy().into_owned())
    });
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return user_err(format!("`--name {name}`: not usable as a file name"));
    }
    let imported = match parse(&text, &path, &name, a.all_tasks) {
        Ok(i) => i,
        Err(e) => return user_err(e),
    };
    for (n, metrics) in imported.scores {
        let p = write_eval_at(
            dir.path(),
            &EvalResult {
                name: n.clone(),
                step,
                metrics,
                at: Timestamp::now(),
            },
        )?;
        println!("{}", p.display());
    }
    eprintln!(
        "sftctl: imported {} scores into run `{id}` at step {step}",
        imported.kind
    );
    Ok(())
}
