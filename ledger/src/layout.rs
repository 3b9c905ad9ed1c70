//! Paths of the ledger tree and the login node's writes into it (sweep, run, batch and
//! submission records, scripts, the runtime binary copy). Layout: `docs/ledger.md`.

use crate::io::{
    append_jsonl, read_json, read_jsonl, sha256_file, write_atomic, write_json_atomic,
};
use crate::records::*;
use crate::{Error, FORMAT_VERSION, Result};
use fs_err as fs;
use std::path::{Path, PathBuf};

/// A ledger root directory.
#[derive(Debug, Clone)]
pub struct Ledger {
    root: PathBuf,
}

impl Ledger {
    /// A handle on `root` without touching the filesystem (for reading).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Opens `root`, creating it and `ledger.json` if missing; refuses a newer format.
    pub fn create(root: impl Into<PathBuf>, created_by: &str) -> Result<Self> {
        let l = Self::at(root);
        fs::create_dir_all(&l.root)?;
        match l.info()? {
            Some(_) => {}
            None => write_json_atomic(
                &l.root.join("ledger.json"),
                &LedgerInfo {
                    format_version: FORMAT_VERSION,
                    created_at: Timestamp::now(),
                    created_by: created_by.to_owned(),
                },
            )?,
        }
        Ok(l)
    }

    /// `ledger.json`, checked against [`FORMAT_VERSION`]; `None` if absent.
    pub fn info(&self) -> Result<Option<LedgerInfo>> {
        let path = self.root.join("ledger.json");
        let info: Option<LedgerInfo> = read_json(&path)?;
        if let Some(i) = &info
            && i.format_version > FORMAT_VERSION
        {
            return Err(Error::Version {
                path,
                found: i.format_version,
            });
        }
        Ok(info)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of sweep `name` (may not exist yet).
    pub fn sweep(&self, name: &str) -> SweepDir {
        SweepDir {
            path: self.root.join("sweeps").join(name),
            name: name.to_owned(),
            root: self.root.clone(),
        }
    }

    /// Names of the sweeps that have a `sweep.json`, sorted.
    pub fn sweeps(&self) -> Result<Vec<String>> {
        let dir = self.root.join("sweeps");
        let mut out = Vec::new();
        match fs::read_dir(&dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    if e.path().join("sweep.json").exists() {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        out.sort();
        Ok(out)
    }
}

/// `<root>/sweeps/<name>/`.
#[derive(Debug, Clone)]
pub struct SweepDir {
    path: PathBuf,
    name: String,
    root: PathBuf,
}

impl SweepDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn run(&self, run_id: &str) -> RunDir {
        RunDir {
            path: self.path.join("runs").join(run_id),
            root: Some(self.root.clone()),
        }
    }
    /// The claim file that serializes `sftctl submit`/`cancel` of this sweep.
    pub fn lock_path(&self) -> PathBuf {
        self.path.join("submit.lock")
    }
    pub fn batch_path(&self, token: &str) -> PathBuf {
        self.path.join("batches").join(format!("{token}.json"))
    }
    /// Directory of per-index links of an array batch: `<i>` links to the run directory, so
    /// Slurm's `%a` in an output path lands in the run's own directory.
    pub fn batch_links(&self, token: &str) -> PathBuf {
        self.path.join("batches").join(token)
    }

    pub fn read_sweep(&self) -> Result<Option<SweepRecord>> {
        read_json(&self.path.join("sweep.json"))
    }
    pub fn write_sweep(&self, r: &SweepRecord) -> Result<()> {
        refuse_links(&self.root, &self.path.join("sweep.json"))?;
        write_json_atomic(&self.path.join("sweep.json"), r)
    }
    /// Keeps the spec text that was submitted, beside the sweep record.
    pub fn write_spec(&self, text: &str) -> Result<()> {
        refuse_links(&self.root, &self.path.join("spec.toml"))?;
        write_atomic(&self.path.join("spec.toml"), text.as_bytes())
    }
    pub fn write_batch(&self, b: &Batch) -> Result<()> {
        refuse_links(&self.root, &self.batch_path(&b.token))?;
        write_json_atomic(&self.batch_path(&b.token), b)
    }
    /// Every batch record, oldest first (by creation time, then token).
    pub fn read_batches(&self) -> Result<Vec<Batch>> {
        let dir = self.path.join("batches");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for e in rd {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Some(b) = read_json::<Batch>(&p)?
            {
                out.push(b);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.token).cmp(&(b.created_at, &b.token)));
        Ok(out)
    }
    /// Creates `batches/<token>/<i>` symlinks to each entry's run directory.
    pub fn link_batch(&self, b: &Batch) -> Result<()> {
        let dir = self.batch_links(&b.token);
        refuse_links(&self.root, &dir)?;
        fs::create_dir_all(&dir)?;
        for (i, e) in b.entries.iter().enumerate() {
            let link = dir.join(i.to_string());
            let target = Path::new("../../runs").join(&e.run_id);
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    return Err(std::io::Error::new(
                        err.kind(),
                        format!("creating symlink `{}`: {err}", link.display()),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Copies the runtime binary into `bin/<sha256>/<file name>` (once per content) and returns
    /// its record; queued jobs run the copy, so rebuilding the original changes nothing.
    pub fn store_runtime(&self, source: &Path) -> Result<RuntimeBinary> {
        let sha = sha256_file(source)?;
        let file_name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "runtime".into());
        let dir = self.path.join("bin").join(&sha);
        let dest = dir.join(&file_name);
        refuse_links(&self.root, &dest)?;
        if !dest.exists() {
            fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
            // Created new (a planted link is refused) with the umask's mode, not the source's.
            let mut out = crate::io::create_new(&tmp)?;
            std::io::copy(&mut fs::File::open(source)?, &mut out)?;
            out.sync_all()?;
            drop(out);
            executable(&tmp)?;
            fs::rename(&tmp, &dest)?;
        }
        Ok(RuntimeBinary {
            sha256: sha,
            path: dest.to_string_lossy().into_owned(),
            source: source.to_string_lossy().into_owned(),
        })
    }

    /// Ids of the run directories that exist, sorted.
    pub fn run_ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        match fs::read_dir(self.path.join("runs")) {
            Ok(rd) => {
                for e in rd {
                    out.push(e?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        out.sort();
        Ok(out)
    }
}

/// `<sweep>/runs/<run_id>/`: everything about one run.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    /// The ledger root when known (sftctl's writes): nothing is written through a symbolic
    /// link planted below it.
    root: Option<PathBuf>,
}

impl RunDir {
    /// A run directory at an explicit path (the runtime gets it on its command line).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            root: None,
        }
    }
    pub(crate) fn guard(&self, target: &Path) -> Result<()> {
        match &self.root {
            Some(root) => refuse_links(root, target),
            None => Ok(()),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn run_json(&self) -> PathBuf {
        self.path.join("run.json")
    }
    /// The resolved training configuration the runtime reads.
    pub fn config_json(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn script(&self, phase: u32) -> PathBuf {
        self.path.join(script_name(phase))
    }
    pub fn submissions(&self) -> PathBuf {
        self.path.join("submissions.jsonl")
    }
    pub fn attempts(&self) -> PathBuf {
        self.path.join("attempts.jsonl")
    }
    pub fn metrics(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    pub fn events_dir(&self) -> PathBuf {
        self.path.join("events")
    }
    pub fn events(&self, rank: u32) -> PathBuf {
        self.events_dir().join(format!("rank-{rank}.jsonl"))
    }
    pub fn heartbeat_dir(&self) -> PathBuf {
        self.path.join("heartbeat")
    }
    pub fn heartbeat(&self, rank: u32) -> PathBuf {
        self.heartbeat_dir().join(format!("rank-{rank}.json"))
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }
    pub fn eval_dir(&self) -> PathBuf {
        self.path.join("eval")
    }
    pub fn result(&self) -> PathBuf {
        self.path.join("result.json")
    }
    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }
    pub fn local_dir(&self) -> PathBuf {
        self.path.join("local")
    }

    pub fn read_run(&self) -> Result<Option<RunRecord>> {
        read_json(&self.run_json())
    }
    pub fn write_run(&self, r: &RunRecord) -> Result<()> {
        self.guard(&self.logs())?;
        self.guard(&self.run_json())?;
        fs::create_dir_all(self.logs())?;
        write_json_atomic(&self.run_json(), r)
    }
    pub fn write_config(&self, config: &serde_json::Value) -> Result<()> {
        self.guard(&self.config_json())?;
        write_json_atomic(&self.config_json(), config)
    }
    pub fn write_script(&self, phase: u32, text: &str) -> Result<()> {
        let p = self.script(phase);
        self.guard(&p)?;
        write_atomic(&p, text.as_bytes())?;
        executable(&p)
    }
    /// Appends a submission; the caller holds the sweep's submit claim (single writer).
    pub fn append_submission(&self, s: &Submission) -> Result<()> {
        self.guard(&self.submissions())?;
        append_jsonl(&self.submissions(), s, true)
    }
    pub fn read_submissions(&self) -> Result<Vec<Submission>> {
        Ok(read_jsonl(&self.submissions())?.0)
    }
    pub fn write_local_job(&self, j: &LocalJob) -> Result<()> {
        let p = self.local_dir().join(format!("{}.json", j.job_id));
        self.guard(&p)?;
        write_json_atomic(&p, j)
    }
    pub fn read_local_job(&self, job_id: &str) -> Result<Option<LocalJob>> {
        read_json(&self.local_dir().join(format!("{job_id}.json")))
    }
}

/// Refuses a write to `target` when a directory or file between `root` (exclusive) and it is a
/// symbolic link: a link planted in a shared ledger must not redirect sftctl's writes outside
/// it. The root itself may be a link (a user's `~/ledger` pointing at scratch).
fn refuse_links(root: &Path, target: &Path) -> Result<()> {
    let Ok(rel) = target.strip_prefix(root) else {
        return Err(Error::Escape {
            path: target.to_owned(),
        });
    };
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::Escape {
            path: target.to_owned(),
        });
    }
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(Error::Escape { path: p }),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Adds execute permission wherever the file (created under the umask) has read permission,
/// so a script gets `0777 & !umask` rather than a fixed mode.
pub(crate) fn executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(p)?.permissions().mode() & 0o777;
    fs::set_permissions(
        p,
        std::fs::Permissions::from_mode(mode | ((mode & 0o444) >> 2)),
    )?;
    Ok(())
}

/// File name of a phase's batch script (`job.sh`, or `job.phase<k>.sh` for phased runs).
pub fn script_name(phase: u32) -> String {
    if phase == 0 {
        "job.sh".into()
    } else {
        format!("job.phase{phase}.sh")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_binary_is_copied_once_under_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sftctl-train");
        fs::write(&src, b"v1").unwrap();
        let l = Ledger::create(dir.path().join("ledger"), "test").unwrap();
        let s = l.sweep("s");
        let a = s.store_runtime(&src).unwrap();
        fs::write(&src, b"v2 rebuilt").unwrap();
        let b = s.store_runtime(&src).unwrap();
        assert_ne!(a.sha256, b.sha256);
        assert_eq!(fs::read(&a.path).unwrap(), b"v1");
        assert_eq!(fs::read(&b.path).unwrap(), b"v2 rebuilt");
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_json_atomic(
            &dir.path().join("ledger.json"),
            &serde_json::json!({"format_version": 99, "created_at": "2026-01-01T00:00:00Z", "created_by": "x"}),
        )
        .unwrap();
        let e = Ledger::create(dir.path(), "t").unwrap_err();
        assert!(e.to_string().contains("format version 99"), "{e}");
    }
}
