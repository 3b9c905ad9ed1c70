//! Bad input that once panicked (or could) in `sftctl-data`, replayed on every test run: the
//! corpora under `data/tests/fuzz_regressions/` (found by `fuzz/`, see docs/reliability.md) and
//! property tests for forged token caches and chat data lines.

use proptest::prelude::*;
use sftctl_data::cache::{CACHE_VERSION, TokenCache};
use sftctl_data::samples::parse_record;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const HEADER: usize = 128;

/// A cache file with the given counts and body, magic, version and checksum made valid (the
/// checksum proves integrity, not good form: a forger can always recompute it).
fn forged(n: u64, n_tokens: u64, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEADER];
    f[..8].copy_from_slice(b"SFTCTOK1");
    f[8..12].copy_from_slice(&CACHE_VERSION.to_le_bytes());
    f[16..24].copy_from_slice(&n.to_le_bytes());
    f[24..32].copy_from_slice(&n_tokens.to_le_bytes());
    f.extend_from_slice(body);
    let sum = Sha256::digest(&f[HEADER..]);
    f[64..96].copy_from_slice(&sum);
    f
}

/// Opens `bytes` as a cache and touches every sample: must never panic.
fn open_and_read_all(dir: &Path, bytes: &[u8]) -> bool {
    let p = dir.join("c.tok");
    std::fs::write(&p, bytes).unwrap();
    match TokenCache::open(&p) {
        Err(_) => false,
        Ok(c) => {
            for i in 0..c.len() {
                let ids = c.input_ids(i);
                assert_eq!(ids.len(), c.sample_len(i));
                assert_eq!(c.loss_mask(i).len(), ids.len());
                let _ = (c.loss_tokens(i), c.source_line(i));
            }
            true
        }
    }
}

fn offsets(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|o| o.to_le_bytes()).collect()
}

#[test]
fn forged_counts_and_offsets_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    // Counts chosen so that the size check wraps around to the file's real length.
    let n = (u64::MAX / 16) + 1;
    assert!(!open_and_read_all(dir.path(), &forged(n, 0, &[0; 8])));
    // Offsets that decrease, overshoot the token count or do not start at 0.
    let two_samples = |offs: &[u64]| {
        let mut body = offsets(offs);
        body.extend(offsets(&[1, 2]));
        body.extend(vec![0u8; 3 * 5]);
        forged(2, 3, &body)
    };
    for offs in [[0, 2, 1], [0, 9, 3], [1, 2, 3], [0, 1, 2]] {
        assert!(
            !open_and_read_all(dir.path(), &two_samples(&offs)),
            "{offs:?}"
        );
    }
    assert!(open_and_read_all(dir.path(), &two_samples(&[0, 1, 3])));
}

#[test]
fn committed_corpora_replay_without_panics() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for sub in ["token_cache", "data_jsonl"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            if sub == "token_cache" {
                // The fuzz target fixes up magic, version and checksum the same way.
                if bytes.len() >= 16 {
                    let n_s = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                    let n_t = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
                    open_and_read_all(dir.path(), &forged(n_s, n_t, &bytes[16..]));
                }
            } else {
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let _ = parse_record(line);
                }
            }
            n += 1;
        }
    }
    assert!(n > 0, "no corpus files under {}", root.display());
}

/// tokenizer.json files on which the tokenizers library panics (found by the `tokenizer_json`
/// fuzz target, committed under `tests/fuzz_regressions/tokenizer_json/`): each is an error
/// naming the file, not a panic of the caller.
#[test]
fn tokenizer_json_the_library_panics_on_is_an_error() {
    use sftctl_data::{ChatTokenizer, Flavor, write_tiny_tokenizer};
    let dir = tempfile::tempdir().unwrap();
    write_tiny_tokenizer(dir.path(), Flavor::Llama3).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/tokenizer_json");
    for name in [
        "decoder-not-json",
        "decoder-not-utf8",
        "template-undefined-special-token",
        "template-ids-tokens-lengths",
        "decoder-a-number",
        "decoder-wrong-field-type",
    ] {
        std::fs::copy(root.join(name), dir.path().join("tokenizer.json")).unwrap();
        // Loading must fail; a load that passed would panic at the first encode.
        let e = std::panic::catch_unwind(|| {
            let t = ChatTokenizer::from_dir(dir.path()).ok()?;
            let _ = t.encode("hello", true);
            Some(())
        })
        .map_err(|_| format!("{name}: panicked"))
        .and_then(|loaded| match loaded {
            Some(()) => Err(format!("{name}: loaded")),
            None => Ok(ChatTokenizer::from_dir(dir.path()).unwrap_err()),
        })
        .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("tokenizer.json"), "{name}: {msg}");
        eprintln!("{name}: {msg}");
    }
}

/// The `tokenizer_json` fuzz target's seeds and committed corpus, replayed as the target runs
/// them: each file as `tokenizer.json` beside the tiny Llama 3 tokenizer's config, then encode
/// and decode. Errors are fine, panics are not.
#[test]
fn committed_tokenizer_json_corpus_replays_without_panics() {
    use sftctl_data::{ChatTokenizer, Flavor, write_tiny_tokenizer};
    let dir = tempfile::tempdir().unwrap();
    write_tiny_tokenizer(dir.path(), Flavor::Llama3).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    let mut loaded = 0;
    for sub in [
        "../fuzz/seeds/tokenizer_json",
        "tests/fuzz_regressions/tokenizer_json",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            std::fs::copy(&f, dir.path().join("tokenizer.json")).unwrap();
            n += 1;
            let Ok(t) = ChatTokenizer::from_dir(dir.path()) else {
                continue;
            };
            loaded += 1;
            let _ = (t.vocab_size(), t.bos_id(), t.eos_id(), t.pad_id());
            for text in ["hello world", "<|eot_id|> ab\u{e9}\u{1f600}", ""] {
                if let Ok(ids) = t.encode(text, true) {
                    let _ = t.decode(&ids, false);
                    let _ = t.decode(&ids, true);
                }
            }
            let _ = t.decode(&[0, 1, 2, u32::MAX], false);
        }
    }
    assert!(n >= 3 && loaded >= 3, "{n} corpus files, {loaded} loaded");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_forged_cache_opens_cleanly_or_is_refused(
        n in prop_oneof![0u64..6, any::<u64>()],
        n_tokens in prop_oneof![0u64..20, any::<u64>()],
        body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let dir = tempfile::tempdir().unwrap();
        open_and_read_all(dir.path(), &forged(n, n_tokens, &body));
    }

    #[test]
    fn any_line_parses_or_is_refused(line in ".{0,200}") {
        let _ = parse_record(&line);
    }
}
