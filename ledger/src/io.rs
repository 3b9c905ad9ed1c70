//! Crash-safe file primitives: atomic JSON documents, single-writer JSONL logs and tolerant
//! readers. Nothing here takes a lock.

use crate::{Error, Result, failpoint};
use fs_err as fs;
use serde::{Serialize, de::DeserializeOwned};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a uniquely named temporary file in the same directory is
/// written, fsynced and renamed over `path`, then the directory is fsynced. A reader sees the old
/// or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = create_new(&tmp)?;
        failpoint::hit("atomic.tmp_created", || {})?;
        failpoint::hit("atomic.tmp_half_written", || {
            let _ = f.write_all(&bytes[..bytes.len() / 2]);
        })?;
        f.write_all(bytes)?;
        f.sync_all()?;
        failpoint::hit("atomic.tmp_synced", || {})?;
        fs::rename(&tmp, path)?;
        failpoint::hit("atomic.renamed", || {})?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a new file for writing; fails if anything (a planted symbolic link too) has the
/// name. Mode `0666` less the umask, as for any file.
pub fn create_new(path: &Path) -> Result<fs::File> {
    Ok(fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?)
}

/// Serializes `value` as pretty JSON and writes it with [`write_atomic`].
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON document; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Best effort: fsync a directory so a rename in it survives a crash. Some filesystems refuse to
/// open directories for sync; the rename is still atomic there.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Appends JSON lines to one file. There must be one writer per file at a time (the ledger layout
/// gives each rank its own files); each record is written with a single `write` of a whole line
/// to an `O_APPEND` descriptor. If the previous writer died mid-line, the torn line is closed with
/// a newline first so it cannot merge with the next record.
#[derive(Debug)]
pub struct JsonlWriter {
    path: PathBuf,
    file: fs::File,
    sync: bool,
}

impl JsonlWriter {
    /// Opens `path` for appending, creating it and its directory. With `sync`, every record is
    /// fsynced (for rare, precious records such as submissions).
    pub fn open(path: &Path, sync: bool) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        use fs_err::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW: a link planted in place of a log must not redirect appends elsewhere.
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.file_mut().seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            sync,
        })
    }

    /// Appends one record as one line.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|source| Error::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push(b'\n');
        failpoint::hit("jsonl.half_line", || {
            let _ = self.file.write_all(&line[..line.len() / 2]);
        })?;
        self.file.write_all(&line)?;
        failpoint::hit("jsonl.line_written", || {})?;
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends one record to `path` (open, write one line, close).
pub fn append_jsonl<T: Serialize>(path: &Path, record: &T, sync: bool) -> Result<()> {
    JsonlWriter::open(path, sync)?.append(record)
}

/// Lines of a JSONL file that parse as `T`, plus how many did not (a torn or foreign line is
/// skipped, never an error). A missing file is empty.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<(Vec<T>, usize)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    Ok(parse_lines(&bytes))
}

fn parse_lines<T: DeserializeOwned>(bytes: &[u8]) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in bytes.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(v) => out.push(v),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

/// The last record of a JSONL file that parses as `T`, reading only the file's tail, so a status
/// over thousands of runs does not read every metrics log whole.
pub fn last_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    let mut window = 16 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        f.file_mut().seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        f.read_to_end(&mut buf)?;
        // Drop the (possibly partial) first line unless we read from the file's start.
        let body: &[u8] = if start == 0 {
            &buf
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => &buf[i + 1..],
                None => &[],
            }
        };
        for line in body.rsplit(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Ok(v) = serde_json::from_slice(line) {
                return Ok(Some(v));
            }
        }
        if start == 0 {
            return Ok(None);
        }
        window *= 4;
    }
}

/// SHA-256 of a file's content, hex encoded, streaming.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn torn_last_line_is_skipped_and_closed_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        append_jsonl(&p, &json!({"step": 1}), false).unwrap();
        // A writer killed mid-record leaves half a line.
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"step": 2, "lo"#).unwrap();
        drop(f);
        let (v, bad): (Vec<Value>, _) = read_jsonl(&p).unwrap();
        assert_eq!((v.len(), bad), (1, 1));
        assert_eq!(last_jsonl::<Value>(&p).unwrap(), Some(json!({"step": 1})));
        append_jsonl(&p, &json!({"step": 3}), true).unwrap();
        let (v, bad): (Vec<Value>, _) = read_jsonl(&p).unwrap();
        assert_eq!(v, vec![json!({"step": 1}), json!({"step": 3})]);
        assert_eq!(bad, 1);
        assert_eq!(last_jsonl::<Value>(&p).unwrap(), Some(json!({"step": 3})));
    }

    #[test]
    fn missing_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.jsonl");
        assert_eq!(read_jsonl::<Value>(&p).unwrap().0.len(), 0);
        assert_eq!(last_jsonl::<Value>(&p).unwrap(), None);
        assert_eq!(read_json::<Value>(&p).unwrap(), None);
    }

    #[test]
    fn last_record_of_a_long_log_is_found_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut w = JsonlWriter::open(&p, false).unwrap();
        for step in 0..20_000 {
            w.append(&json!({"step": step, "pad": "x".repeat(20)}))
                .unwrap();
        }
        let last: Value = last_jsonl(&p).unwrap().unwrap();
        assert_eq!(last["step"], 19_999);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/doc.json");
        write_json_atomic(&p, &json!({"v": 1})).unwrap();
        write_json_atomic(&p, &json!({"v": 2})).unwrap();
        assert_eq!(read_json::<Value>(&p).unwrap(), Some(json!({"v": 2})));
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("doc.json")]);
    }
}
