//! `sftctl doctor`: the environment checks of `sftctl-doctor` on this machine; exit 1 when one
//! the run needs fails. Findings go to stdout (they are the command's data).

use crate::args::DoctorArgs;
use sftctl_doctor::{Needs, Probe, check, render};
use std::io::Write;

pub fn run(a: &DoctorArgs) -> anyhow::Result<()> {
    let needs = Needs {
        libtorch: a.cuda,
        cuda: a.cuda,
        nccl: a.multi_rank && a.cuda,
        mpi: a.multi_rank,
    };
    let findings = check(&Probe::system(), needs);
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &findings)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&findings))?;
    }
    let problems = findings.iter().filter(|f| f.problem).count();
    if problems > 0 {
        return crate::user_err(format!(
            "{problems} problem(s) found; fix them before submitting"
        ));
    }
    Ok(())
}
