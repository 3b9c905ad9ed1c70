//! `sftctl logs RUN [-f]`: prints the newest log of a run from its ledger directory.

use crate::args::LogsArgs;
use crate::cmd::{find_run, stale_from_spec};
use crate::status::collect;
use crate::user_err;
use sftctl_ledger::Ledger;
use sftctl_slurm::Slurm;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

pub fn run(a: &LogsArgs) -> anyhow::Result<()> {
    let ledger = Ledger::at(&a.ledger.ledger);
    let (sweep, id) = find_run(&ledger, &a.run)?;
    let logs = sweep.run(&id).logs();
    let newest = || -> anyhow::Result<Option<std::path::PathBuf>> {
        let mut best: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
        if let Ok(rd) = fs_err::read_dir(&logs) {
            for e in rd {
                let e = e?;
                let t = e.metadata()?.modified()?;
                if best.as_ref().is_none_or(|(b, _)| t > *b) {
                    best = Some((t, e.path()));
                }
            }
        }
        Ok(best.map(|(_, p)| p))
    };
    let mut out = std::io::stdout().lock();
    let Some(path) = newest()? else {
        if !a.follow {
            return user_err(format!("run `{id}` has no log yet in `{}`", logs.display()));
        }
        eprintln!("sftctl: waiting for a log in `{}`", logs.display());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(p) = newest()? {
                return follow(&sweep, &id, p, &mut out);
            }
        }
    };
    if a.follow {
        return follow(&sweep, &id, path, &mut out);
    }
    let mut f = fs_err::File::open(&path)?;
    std::io::copy(&mut f, &mut out)?;
    Ok(())
}

fn follow(
    sweep: &sftctl_ledger::SweepDir,
    id: &str,
    path: std::path::PathBuf,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut f = fs_err::File::open(&path)?;
    let mut pos = 0u64;
    let slurm = Slurm::from_env();
    let stale = stale_from_spec(sweep);
    let mut quiet_after_final = 0;
    loop {
        f.file_mut().seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        out.write_all(&buf)?;
        out.flush()?;
        let (st, _) = collect(sweep, &[id.to_owned()], &slurm, stale)?;
        if st.first().is_some_and(|s| s.state.is_final()) && buf.is_empty() {
            quiet_after_final += 1;
            if quiet_after_final >= 2 {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
