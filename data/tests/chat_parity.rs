//! Chat templates and tokenization against transformers' `apply_chat_template` (fixtures made by
//! `data/scripts/make_chat_fixtures.py`), and the template layouts transformers reads.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sftctl_data::DataError;
use sftctl_data::chat::{ChatTemplate, Message, RenderOptions};
use sftctl_data::tokenizer::{ChatTokenizer, Flavor, write_tiny_tokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<Value> {
    let text = fs_err::read_to_string(fixtures().join("chat_cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["transformers_version"].is_string());
    v["cases"].as_array().unwrap().clone()
}

fn options(case: &Value) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        tools: match &case["tools"] {
            Value::Null => None,
            t => Some(t.clone()),
        },
        extra: case["extra"].as_object().unwrap().clone(),
    }
}

#[test]
fn tiny_tokenizers_are_deterministic_and_match_the_committed_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, flavor) in [
        ("tiny-llama3", Flavor::Llama3),
        ("tiny-granite", Flavor::Granite),
    ] {
        let info = write_tiny_tokenizer(&tmp.path().join(name), flavor).unwrap();
        for file in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let made = fs_err::read(tmp.path().join(name).join(file)).unwrap();
            let committed = fs_err::read(fixtures().join(name).join(file)).unwrap();
            assert!(
                made == committed,
                "{name}/{file} differs from the committed fixture; rerun the example"
            );
        }
        let tok = ChatTokenizer::from_dir(&tmp.path().join(name)).unwrap();
        assert_eq!(tok.vocab_size(), info.vocab_size);
        assert_eq!(tok.bos_id(), Some(info.bos_id));
        assert_eq!(tok.eos_id(), Some(info.eos_id));
        assert_eq!(tok.pad_id(), Some(info.pad_id));
        assert!(
            (700..=1100).contains(&info.vocab_size),
            "{}",
            info.vocab_size
        );
    }
}

#[test]
fn rendered_text_and_ids_equal_transformers() {
    let cases = cases();
    assert!(cases.len() >= 18);
    for case in &cases {
        let tok =
            ChatTokenizer::from_dir(&fixtures().join(case["tokenizer"].as_str().unwrap())).unwrap();
        let template = tok.chat_template(None).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let name = format!("{}/{}", case["tokenizer"], case["name"]);
        let text = template.render(&messages, &options(case)).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{name}");
        let ids = template.apply(&tok, &messages, &options(case)).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(ids, want, "{name}");
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            text,
            "{name}: byte-level round trip"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).unwrap();
    for e in fs_err::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs_err::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&fs_err::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    fs_err::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn templates_are_read_from_every_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let msgs = [Message::new("user", "hi"), Message::new("assistant", "yo")];
    let opts = RenderOptions::default();
    let base = ChatTokenizer::from_dir(&fixtures().join("tiny-llama3")).unwrap();
    let want = base
        .chat_template(None)
        .unwrap()
        .render(&msgs, &opts)
        .unwrap();

    // chat_template.jinja beside a config without the key (transformers' current layout).
    let jinja = tmp.path().join("jinja");
    copy_dir(&fixtures().join("tiny-llama3"), &jinja);
    let source = base.chat_template(None).unwrap().source().to_owned();
    edit_config(&jinja, |c| {
        c.remove("chat_template");
    });
    fs_err::write(jinja.join("chat_template.jinja"), &source).unwrap();
    let tok = ChatTokenizer::from_dir(&jinja).unwrap();
    assert_eq!(
        tok.chat_template(None)
            .unwrap()
            .render(&msgs, &opts)
            .unwrap(),
        want
    );

    // A list of named templates in the config (the older multi-template layout).
    let list = tmp.path().join("list");
    copy_dir(&fixtures().join("tiny-llama3"), &list);
    edit_config(&list, |c| {
        c.insert(
            "chat_template".into(),
            serde_json::json!([{"name": "default", "template": source}, {"name": "plain", "template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"}]),
        );
    });
    let tok = ChatTokenizer::from_dir(&list).unwrap();
    assert_eq!(tok.template_names(), ["default", "plain"]);
    assert_eq!(
        tok.chat_template(None)
            .unwrap()
            .render(&msgs, &opts)
            .unwrap(),
        want
    );
    assert_eq!(
        tok.chat_template(Some("plain"))
            .unwrap()
            .render(&msgs, &opts)
            .unwrap(),
        "user: hi\nassistant: yo\n"
    );
    assert!(matches!(
        tok.chat_template(Some("nope")),
        Err(DataError::UnknownTemplate { .. })
    ));

    // additional_chat_templates/NAME.jinja.
    fs_err::create_dir_all(list.join("additional_chat_templates")).unwrap();
    fs_err::write(
        list.join("additional_chat_templates/terse.jinja"),
        "{{ messages|length }}",
    )
    .unwrap();
    let tok = ChatTokenizer::from_dir(&list).unwrap();
    assert_eq!(
        tok.chat_template(Some("terse"))
            .unwrap()
            .render(&msgs, &opts)
            .unwrap(),
        "2"
    );

    // No template anywhere: an error naming the directory unless one is given explicitly.
    let none = tmp.path().join("none");
    copy_dir(&fixtures().join("tiny-llama3"), &none);
    edit_config(&none, |c| {
        c.remove("chat_template");
    });
    let tok = ChatTokenizer::from_dir(&none).unwrap();
    let err = tok.chat_template(None).unwrap_err();
    assert!(matches!(err, DataError::NoChatTemplate { .. }));
    assert!(err.to_string().contains("none"), "{err}");
    let explicit = ChatTemplate::new("given", &source, tok.special_tokens().clone()).unwrap();
    assert_eq!(explicit.render(&msgs, &opts).unwrap(), want);
    assert_ne!(tok.fingerprint(), base.fingerprint());
}

#[test]
fn missing_tokenizer_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ChatTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    fs_err::write(tmp.path().join("tokenizer.json"), "{\"version\": ").unwrap();
    let err = ChatTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn template_globals_behave_like_transformers() {
    let special = Default::default();
    let t = ChatTemplate::new(
        "t",
        "{{ raise_exception('bad role ' ~ messages[0].role) }}",
        special,
    )
    .unwrap();
    let err = t
        .render(&[Message::new("narrator", "x")], &RenderOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("bad role narrator"), "{err}");

    let year = time::OffsetDateTime::now_utc().year().to_string();
    let t = ChatTemplate::new("t", "{{ strftime_now('%Y') }}", Default::default()).unwrap();
    assert_eq!(t.render(&[], &RenderOptions::default()).unwrap(), year);

    // Python's json.dumps separators, ensure_ascii=False, and no HTML escaping.
    let t = ChatTemplate::new(
        "t",
        "{{ messages[0] | tojson }}|{{ [1.0, none, true, '<é>'] | tojson }}",
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        t.render(&[Message::new("user", "a\"b\n")], &RenderOptions::default())
            .unwrap(),
        r#"{"role": "user", "content": "a\"b\n"}|[1.0, null, true, "<é>"]"#
    );
    // Python string methods and namespace().
    let t = ChatTemplate::new(
        "t",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ m.content.strip().upper() }}{% endfor %}{{ ns.n }}",
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        t.render(
            &[Message::new("user", " a "), Message::new("user", "b")],
            &RenderOptions::default()
        )
        .unwrap(),
        "AB2"
    );
    // trim_blocks + lstrip_blocks as transformers sets them.
    let t = ChatTemplate::new("t", "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}", Default::default()).unwrap();
    assert_eq!(
        t.render(&[Message::new("user", "x")], &RenderOptions::default())
            .unwrap(),
        "x\n"
    );
}
