//! Assistant-only loss masks against transformers' `return_assistant_tokens_mask` (fixtures from
//! `data/scripts/make_chat_fixtures.py`), and the reading of chat data files.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sftctl_data::DataError;
use sftctl_data::chat::Message;
use sftctl_data::samples::{
    DropReason, TokenizeOptions, parse_record, tokenize_conversation, tokenize_jsonl,
};
use sftctl_data::tokenizer::ChatTokenizer;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every masking case the issue names, for both template styles: (tokenizer, case, loss tokens
/// transformers counts). The loss-token count is written out so a fixture that lost its masks
/// fails here too.
const CASES: &[(&str, &str, usize)] = &[
    ("tiny-llama3", "single_turn", 2),
    ("tiny-llama3", "system_prompt", 2),
    ("tiny-llama3", "multi_turn", 18),
    ("tiny-llama3", "empty_reply", 1),
    ("tiny-llama3", "unicode", 53),
    ("tiny-llama3", "role_marker_in_reply", 14),
    ("tiny-llama3", "whitespace", 14),
    ("tiny-llama3", "two_assistant_turns_same_text", 8),
    ("tiny-granite", "single_turn", 2),
    ("tiny-granite", "system_prompt", 2),
    ("tiny-granite", "multi_turn", 19),
    ("tiny-granite", "empty_reply", 1),
    ("tiny-granite", "unicode", 53),
    ("tiny-granite", "role_marker_in_reply", 13),
    ("tiny-granite", "whitespace", 19),
    ("tiny-granite", "two_assistant_turns_same_text", 8),
];

#[test]
fn loss_masks_equal_transformers_assistant_masks() {
    let text = fs_err::read_to_string(fixtures().join("chat_cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    for &(tok_name, case_name, want_loss) in CASES {
        let case = all["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tokenizer"] == tok_name && c["name"] == case_name)
            .unwrap_or_else(|| panic!("fixture lacks {tok_name}/{case_name}"));
        let tok = ChatTokenizer::from_dir(&fixtures().join(tok_name)).unwrap();
        let template = tok.chat_template(None).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let sample = tokenize_conversation(&tok, &template, &messages).unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let mask: Vec<bool> = case["assistant_mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v == 1)
            .collect();
        assert_eq!(sample.input_ids, ids, "{tok_name}/{case_name}");
        assert_eq!(sample.loss_mask, mask, "{tok_name}/{case_name}");
        assert_eq!(sample.loss_tokens(), want_loss, "{tok_name}/{case_name}");
        // Never a role marker or the system/user text: the first loss token follows the
        // assistant header, and every token before it is masked.
        let eot = if tok_name == "tiny-llama3" {
            "<|eot_id|>"
        } else {
            "<|end_of_text|>"
        };
        let eot = tok.token_id(eot).unwrap();
        let last_loss = sample.loss_mask.iter().rposition(|&m| m).unwrap();
        assert_eq!(
            sample.input_ids[last_loss], eot,
            "{tok_name}/{case_name}: reply ends with end-of-turn"
        );
        for marker in [
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|start_of_role|>",
            "<|end_of_role|>",
        ] {
            let Some(m) = tok.token_id(marker) else {
                continue;
            };
            let marker_in_reply = case_name == "role_marker_in_reply";
            for (t, (&id, &loss)) in sample.input_ids.iter().zip(&sample.loss_mask).enumerate() {
                if id == m && loss {
                    assert!(
                        marker_in_reply,
                        "{tok_name}/{case_name}: role marker at {t} counted"
                    );
                }
            }
        }
    }
}

#[test]
fn prompt_completion_pairs_become_chats() {
    let m =
        parse_record(r#"{"prompt": "2+2?", "completion": "4", "system": "Be exact."}"#).unwrap();
    assert_eq!(
        m,
        vec![
            Message::new("system", "Be exact."),
            Message::new("user", "2+2?"),
            Message::new("assistant", "4")
        ]
    );
    let m = parse_record(r#"{"prompt": "2+2?", "completion": "4"}"#).unwrap();
    assert_eq!(m.len(), 2);
    for (line, why) in [
        ("{", "invalid JSON"),
        ("[1]", "expected a JSON object"),
        (r#"{"messages": []}"#, "empty"),
        (r#"{"messages": [{"content": "x"}]}"#, "bad `messages`"),
        (r#"{"prompt": "x"}"#, "bad prompt/completion"),
        (r#"{"text": "x"}"#, "expected `messages`"),
    ] {
        let err = parse_record(line).unwrap_err();
        assert!(err.contains(why), "{line}: {err}");
    }
}

fn write(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("data.jsonl");
    fs_err::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn files_drop_long_and_lossless_samples_and_name_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let template = tok.chat_template(None).unwrap();
    let long = format!(
        r#"{{"prompt": "{}", "completion": "x"}}"#,
        "word ".repeat(200)
    );
    let path = write(
        tmp.path(),
        &[
            r#"{"prompt": "What is 1 + 1?", "completion": "2"}"#,
            "",
            &long,
            r#"{"messages": [{"role": "user", "content": "no reply"}]}"#,
            "not json",
            r#"{"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]}"#,
            r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}"#,
        ],
    );
    let strict = TokenizeOptions {
        max_len: 64,
        skip_malformed: false,
    };
    let err = tokenize_jsonl(&path, &tok, &template, &strict).unwrap_err();
    assert!(
        matches!(err, DataError::MalformedLine { line: 5, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:5: invalid JSON", path.display())),
        "{err}"
    );

    let lenient = TokenizeOptions {
        skip_malformed: true,
        ..strict
    };
    let file = tokenize_jsonl(&path, &tok, &template, &lenient).unwrap();
    assert_eq!(file.lines, [1, 7]);
    assert_eq!(
        (
            file.dropped.too_long,
            file.dropped.no_loss_tokens,
            file.dropped.malformed
        ),
        (1, 1, 2)
    );
    assert_eq!(
        file.dropped.examples,
        [
            (DropReason::TooLong, 3),
            (DropReason::NoLossTokens, 4),
            (DropReason::Malformed, 5),
            (DropReason::Malformed, 6)
        ]
    );
    assert!(
        file.samples
            .iter()
            .all(|s| s.len() <= 64 && s.loss_tokens() > 0)
    );
}

#[test]
fn templates_whose_prefixes_change_are_rejected() {
    let tok = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let source = "{{ messages|length }}{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";
    let template = sftctl_data::chat::ChatTemplate::new("t", source, Default::default()).unwrap();
    let msgs = [Message::new("user", "u"), Message::new("assistant", "a")];
    let err = tokenize_conversation(&tok, &template, &msgs).unwrap_err();
    assert_eq!(err, sftctl_data::samples::SampleError::Unstable { upto: 1 });
}
