//! The token cache: same contents as tokenizing directly, reused, keyed, safe under concurrent
//! builders, and corrupt files detected.

use std::path::{Path, PathBuf};

use sftctl_data::cache::TokenCache;
use sftctl_data::samples::{TokenizeOptions, tokenize_jsonl};
use sftctl_data::tokenizer::ChatTokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn data_file(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for i in 0..200 {
        lines.push(format!(
            r#"{{"messages": [{{"role": "user", "content": "What is {i} + {}?"}}, {{"role": "assistant", "content": "{}"}}]}}"#,
            i * 3,
            i * 4
        ));
    }
    lines.push(format!(
        r#"{{"prompt": "{}", "completion": "long"}}"#,
        "very ".repeat(100)
    ));
    let p = dir.join("d.jsonl");
    fs_err::write(&p, lines.join("\n")).unwrap();
    p
}

#[test]
fn cache_holds_what_tokenizing_gives_and_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path());
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-granite")).unwrap();
    let template = tok.chat_template(None).unwrap();
    let opts = TokenizeOptions {
        max_len: 96,
        skip_malformed: false,
    };
    let direct = tokenize_jsonl(&data, &tok, &template, &opts).unwrap();
    let cache_dir = tmp.path().join("cache");
    let cache = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts).unwrap();
    assert_eq!(cache.len(), 200);
    assert_eq!(cache.dropped().too_long, 1);
    for (i, s) in direct.samples.iter().enumerate() {
        assert_eq!(cache.input_ids(i), s.input_ids);
        let mask: Vec<bool> = cache.loss_mask(i).iter().map(|&m| m == 1).collect();
        assert_eq!(mask, s.loss_mask);
        assert_eq!(cache.source_line(i), direct.lines[i]);
        assert_eq!(cache.loss_tokens(i), s.loss_tokens());
    }
    let modified = fs_err::metadata(cache.path()).unwrap().modified().unwrap();
    let again = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts).unwrap();
    assert_eq!(again.path(), cache.path());
    assert_eq!(
        fs_err::metadata(again.path()).unwrap().modified().unwrap(),
        modified
    );

    // Another max length or another data file is another cache.
    let other = TokenCache::open_or_build(
        &cache_dir,
        &data,
        &tok,
        &template,
        &TokenizeOptions {
            max_len: 1000,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(other.path(), cache.path());
    assert_eq!(other.len(), 201);
    fs_err::write(&data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n").unwrap();
    let changed = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts).unwrap();
    assert_eq!(changed.len(), 1);
    assert_ne!(changed.path(), cache.path());
}

#[test]
fn concurrent_builders_leave_one_valid_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path());
    let cache_dir = tmp.path().join("cache");
    let opts = TokenizeOptions {
        max_len: 96,
        skip_malformed: false,
    };
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
                    let template = tok.chat_template(None).unwrap();
                    let c = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts)
                        .unwrap();
                    assert_eq!(c.len(), 200);
                    c.path().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    let names: Vec<_> = fs_err::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    TokenCache::open(&paths[0]).unwrap();
}

#[test]
fn corrupt_or_truncated_caches_are_detected_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path());
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let template = tok.chat_template(None).unwrap();
    let opts = TokenizeOptions {
        max_len: 96,
        skip_malformed: false,
    };
    let cache_dir = tmp.path().join("cache");
    let path = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts)
        .unwrap()
        .path()
        .to_owned();
    let good = fs_err::read(&path).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    fs_err::write(&path, &flipped).unwrap();
    let err = TokenCache::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("checksum mismatch")
            && err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    fs_err::write(&path, &good[..good.len() - 3]).unwrap();
    let err = TokenCache::open(&path).unwrap_err();
    assert!(err.to_string().contains("bytes, header says"), "{err}");

    let rebuilt = TokenCache::open_or_build(&cache_dir, &data, &tok, &template, &opts).unwrap();
    assert_eq!(fs_err::read(rebuilt.path()).unwrap(), good);
}

#[test]
fn packed_rows_from_caches_carry_labels_positions_and_the_step_loss_count() {
    use sftctl_data::batch::{IGNORE_INDEX, materialize, source_from_cache};
    use sftctl_data::pack::{BatchConfig, Sampler, TailPolicy};
    let tmp = tempfile::tempdir().unwrap();
    let data = data_file(tmp.path());
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let template = tok.chat_template(None).unwrap();
    let opts = TokenizeOptions {
        max_len: 96,
        skip_malformed: false,
    };
    let cache =
        TokenCache::open_or_build(&tmp.path().join("c"), &data, &tok, &template, &opts).unwrap();
    let cfg = BatchConfig {
        batch_size: 50,
        world_size: 2,
        token_budget: 256,
        seed: 5,
        tail: TailPolicy::Continue,
    };
    let mut sampler = Sampler::new(cfg, vec![source_from_cache("d", &cache, 1.0)]).unwrap();
    for _ in 0..5 {
        let step = sampler.next_step();
        let mut loss = 0;
        for mb in step.ranks.iter().flat_map(|r| &r.micro_batches) {
            let row = materialize(mb, &[&cache]);
            assert_eq!(row.input_ids.len(), row.labels.len());
            assert_eq!(row.position_ids.len(), row.input_ids.len());
            assert!(row.input_ids.len() <= 256);
            for (k, id) in mb.samples.iter().enumerate() {
                let start = row.cu_seqlens[k] as usize;
                let ids = cache.input_ids(id.index as usize);
                assert_eq!(&row.input_ids[start..start + ids.len()], ids.as_slice());
                assert_eq!(row.position_ids[start], 0);
                assert_eq!(row.labels[start], IGNORE_INDEX);
                assert_eq!(ids[0], tok.bos_id().unwrap());
            }
            loss += row.loss_tokens() as u64;
        }
        assert_eq!(loss, step.stats.loss_tokens);
    }
}
