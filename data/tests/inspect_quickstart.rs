//! The `data inspect` report and the bundled quickstart data.

use std::path::{Path, PathBuf};

use sftctl_data::inspect::inspect;
use sftctl_data::quickstart::{generate, write_quickstart};
use sftctl_data::samples::{TokenizeOptions, tokenize_jsonl};
use sftctl_data::tokenizer::ChatTokenizer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn committed_quickstart_data_is_what_the_generator_writes() {
    let tmp = tempfile::tempdir().unwrap();
    write_quickstart(tmp.path()).unwrap();
    for f in ["train.jsonl", "eval.jsonl"] {
        let made = fs_err::read_to_string(tmp.path().join(f)).unwrap();
        let committed =
            fs_err::read_to_string(root().join("examples/data/quickstart").join(f)).unwrap();
        assert!(
            made == committed,
            "examples/data/quickstart/{f} is stale: rerun the example"
        );
    }
    let (train, eval) = generate(400, 100, 20_241_217);
    assert_eq!((train.len(), eval.len()), (400, 100));
    assert!(
        eval.iter().all(|c| !train.contains(c)),
        "held-out split overlaps training"
    );
}

#[test]
fn quickstart_tokenizes_with_both_tiny_tokenizers() {
    for name in ["tiny-llama3", "tiny-granite"] {
        let tok = ChatTokenizer::from_dir(&fixtures().join(name)).unwrap();
        let template = tok.chat_template(None).unwrap();
        let opts = TokenizeOptions {
            max_len: 256,
            skip_malformed: false,
        };
        let file = tokenize_jsonl(
            &root().join("examples/data/quickstart/train.jsonl"),
            &tok,
            &template,
            &opts,
        )
        .unwrap();
        assert_eq!(file.samples.len(), 400, "{name}");
        assert_eq!(file.dropped.total(), 0);
    }
}

#[test]
fn inspect_shows_the_mask_histogram_and_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    let long = format!(
        r#"{{"prompt": "{}", "completion": "x"}}"#,
        "word ".repeat(100)
    );
    fs_err::write(
        &data,
        [
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}"#,
            &long,
            "{oops",
            r#"{"prompt": "Reverse \"abc\".", "completion": "cba"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let template = tok.chat_template(None).unwrap();
    let opts = TokenizeOptions {
        max_len: 64,
        skip_malformed: true,
    };
    let report = inspect(&data, &tok, &template, &opts, 0).unwrap();
    assert_eq!(report.samples, 2);
    assert_eq!((report.dropped.too_long, report.dropped.malformed), (1, 1));
    assert_eq!(report.shown_line, 1);
    assert_eq!(
        report.rendered,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n⟦4<|eot_id|>⟧"
    );
    let text = report.to_string();
    for want in [
        "2 kept",
        "1 longer than 64 tokens",
        "line 2: too long",
        "line 3: malformed",
        "length histogram",
        "⟦4<|eot_id|>⟧",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    let hist_total: u64 = report.histogram.iter().map(|b| b.2).sum();
    assert_eq!(hist_total, 2);
    let second = inspect(&data, &tok, &template, &opts, 1).unwrap();
    assert_eq!(second.shown_line, 4);
    assert!(
        second.rendered.ends_with("⟦cba<|eot_id|>⟧"),
        "{}",
        second.rendered
    );
}
