//! The tokenized-data cache: one file per (data, tokenizer, template, options), a flat
//! memory-mapped layout, built into a temporary file and renamed into place so that concurrent
//! builders and readers never see a partial file. Knows nothing about batches.
//!
//! Layout (little endian, version 1): a 128-byte header (magic `SFTCTOK1`, version, sample and
//! token counts, the key, a SHA-256 of everything after the header, the drop counts), then
//! `n + 1` u64 token offsets, `n` u64 source line numbers, the u32 token ids and one u8 loss flag
//! per token.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::chat::ChatTemplate;
use crate::error::{DataError, Result};
use crate::samples::{DropCounts, TokenizeOptions, TokenizedFile, tokenize_jsonl};
use crate::tokenizer::ChatTokenizer;

const MAGIC: &[u8; 8] = b"SFTCTOK1";
/// Bumped whenever the layout or the masking rule changes; part of the key.
pub const CACHE_VERSION: u32 = 1;
const HEADER: usize = 128;

/// The identity of a cache: SHA-256 over the data file's bytes, the tokenizer's fingerprint, the
/// template source, the options and [`CACHE_VERSION`].
pub fn cache_key(
    data: &Path,
    tok: &ChatTokenizer,
    template: &ChatTemplate,
    opts: &TokenizeOptions,
) -> Result<String> {
    let mut data_hash = Sha256::new();
    std::io::copy(&mut fs_err::File::open(data)?, &mut data_hash)?;
    let mut h = Sha256::new();
    h.update(CACHE_VERSION.to_le_bytes());
    h.update(data_hash.finalize());
    h.update(tok.fingerprint().as_bytes());
    h.update((template.source().len() as u64).to_le_bytes());
    h.update(template.source().as_bytes());
    h.update((opts.max_len as u64).to_le_bytes());
    h.update([u8::from(opts.skip_malformed)]);
    Ok(hex::encode(h.finalize()))
}

/// A read-only, memory-mapped tokenized data set.
#[derive(Debug)]
pub struct TokenCache {
    path: PathBuf,
    map: memmap2::Mmap,
    n: usize,
    n_tokens: usize,
    dropped: DropCounts,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn encode(file: &TokenizedFile, key: &[u8; 32]) -> Vec<u8> {
    let n = file.samples.len();
    let n_tokens: usize = file.samples.iter().map(|s| s.len()).sum();
    let mut body = Vec::with_capacity((n + 1) * 8 + n * 8 + n_tokens * 5);
    let mut off = 0u64;
    body.extend_from_slice(&off.to_le_bytes());
    for s in &file.samples {
        off += s.len() as u64;
        body.extend_from_slice(&off.to_le_bytes());
    }
    for &line in &file.lines {
        body.extend_from_slice(&line.to_le_bytes());
    }
    for s in &file.samples {
        for &id in &s.input_ids {
            body.extend_from_slice(&id.to_le_bytes());
        }
    }
    for s in &file.samples {
        body.extend(s.loss_mask.iter().map(|&m| u8::from(m)));
    }
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&(n as u64).to_le_bytes());
    head.extend_from_slice(&(n_tokens as u64).to_le_bytes());
    head.extend_from_slice(key);
    head.extend_from_slice(&Sha256::digest(&body));
    for c in [
        file.dropped.too_long,
        file.dropped.no_loss_tokens,
        file.dropped.malformed,
    ] {
        head.extend_from_slice(&c.to_le_bytes());
    }
    head.resize(HEADER, 0);
    head.extend_from_slice(&body);
    head
}

impl TokenCache {
    /// Opens the cache for `data` under `cache_dir`, building it first if it is missing or
    /// invalid. Safe when several processes do this at once: each builds into its own temporary
    /// file in `cache_dir` and renames it into place; the files are identical and a rename
    /// never exposes a partial file.
    pub fn open_or_build(
        cache_dir: &Path,
        data: &Path,
        tok: &ChatTokenizer,
        template: &ChatTemplate,
        opts: &TokenizeOptions,
    ) -> Result<Self> {
        let key = cache_key(data, tok, template, opts)?;
        fs_err::create_dir_all(cache_dir)?;
        let path = cache_dir.join(format!("{key}.sftctok"));
        if path.is_file()
            && let Ok(cache) = Self::open(&path)
            && cache.key_hex() == key
        {
            return Ok(cache);
        }
        let file = tokenize_jsonl(data, tok, template, opts)?;
        let mut key_bytes = [0u8; 32];
        hex::decode_to_slice(&key, &mut key_bytes).expect("hex of 32 bytes");
        let bytes = encode(&file, &key_bytes);
        let mut tmp = tempfile::Builder::new()
            .prefix(".building-")
            .tempfile_in(cache_dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| DataError::Cache {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Self::open(&path)
    }

    /// Maps and checks a cache file (magic, version, sizes, checksum).
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |m: &str| DataError::Cache {
            path: path.to_owned(),
            message: m.to_owned(),
        };
        let file = fs_err::File::open(path)?;
        let map = map_readonly(file.file()).map_err(|e| bad(&format!("cannot map: {e}")))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("not a sftctl token cache"));
        }
        let version = u32_at(&map, 8);
        if version != CACHE_VERSION {
            return Err(bad(&format!(
                "cache version {version}, this build reads {CACHE_VERSION}"
            )));
        }
        let n = u64_at(&map, 16) as usize;
        let n_tokens = u64_at(&map, 24) as usize;
        // Checked: forged counts must not wrap around to the file's real size.
        let want = n
            .checked_mul(16)
            .and_then(|x| x.checked_add(HEADER + 8))
            .and_then(|x| x.checked_add(n_tokens.checked_mul(5)?));
        if want != Some(map.len()) {
            return Err(bad(&format!(
                "{} bytes, header says {n} samples of {n_tokens} tokens",
                map.len()
            )));
        }
        if Sha256::digest(&map[HEADER..])[..] != map[64..96] {
            return Err(bad("checksum mismatch"));
        }
        // The checksum proves the content intact, not well formed: offsets must start at 0,
        // never decrease and end at the token count, or reads would slice out of bounds.
        let mut prev = 0u64;
        for i in 0..=n {
            let o = u64_at(&map, HEADER + i * 8);
            if (i == 0 && o != 0)
                || o < prev
                || o > n_tokens as u64
                || (i == n && o != n_tokens as u64)
            {
                return Err(bad(&format!("sample offset {i} is {o}, out of order")));
            }
            prev = o;
        }
        let dropped = DropCounts {
            too_long: u64_at(&map, 96),
            no_loss_tokens: u64_at(&map, 104),
            malformed: u64_at(&map, 112),
            examples: Vec::new(),
        };
        Ok(Self {
            path: path.to_owned(),
            map,
            n,
            n_tokens,
            dropped,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn key_hex(&self) -> String {
        hex::encode(&self.map[32..64])
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn total_tokens(&self) -> usize {
        self.n_tokens
    }

    /// What was dropped while building (line examples are not stored).
    pub fn dropped(&self) -> &DropCounts {
        &self.dropped
    }

    fn offset(&self, i: usize) -> usize {
        u64_at(&self.map, HEADER + i * 8) as usize
    }

    fn tokens_base(&self) -> usize {
        HEADER + (self.n + 1) * 8 + self.n * 8
    }

    /// Tokens of sample `i`.
    pub fn sample_len(&self, i: usize) -> usize {
        self.offset(i + 1) - self.offset(i)
    }

    /// 1-based line of the data file sample `i` came from.
    pub fn source_line(&self, i: usize) -> u64 {
        u64_at(&self.map, HEADER + (self.n + 1) * 8 + i * 8)
    }

    pub fn input_ids(&self, i: usize) -> Vec<u32> {
        let base = self.tokens_base();
        (self.offset(i)..self.offset(i + 1))
            .map(|t| u32_at(&self.map, base + t * 4))
            .collect()
    }

    /// Loss flags of sample `i` (1 = counted), one byte per token.
    pub fn loss_mask(&self, i: usize) -> &[u8] {
        let base = self.tokens_base() + self.n_tokens * 4;
        &self.map[base + self.offset(i)..base + self.offset(i + 1)]
    }

    pub fn loss_tokens(&self, i: usize) -> usize {
        self.loss_mask(i).iter().filter(|&&m| m != 0).count()
    }
}

/// The one `unsafe` of the crate.
#[allow(unsafe_code)]
fn map_readonly(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: cache files are never written in place: builders write a temporary file and
    // rename it over the path, which leaves an existing mapping's inode untouched.
    unsafe { memmap2::Mmap::map(file) }
}
