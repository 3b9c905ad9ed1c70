//! Fuzzes the tokenizer directory loader: a valid `tokenizer.json` with the input as
//! `tokenizer_config.json` (chat templates, special tokens), then a chat template render.
//! Errors are fine; panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_data::{ChatTokenizer, Flavor, Message, RenderOptions, write_tiny_tokenizer};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let d = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-tokcfg-{}", std::process::id()));
        write_tiny_tokenizer(&d, Flavor::Llama3).expect("tiny tokenizer");
        let _ = std::fs::remove_file(d.join("chat_template.jinja"));
        d
    });
    std::fs::write(d.join("tokenizer_config.json"), data).unwrap();
    if let Ok(t) = ChatTokenizer::from_dir(d)
        && let Ok(c) = t.chat_template(None)
    {
        let m: Vec<Message> = serde_json::from_str(
            r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]"#,
        )
        .unwrap();
        let _ = c.render(&m, &RenderOptions::generation_prompt(false));
    }
});
