//! Fuzzes the chat-data reader: every line of the input goes through `parse_record` and, when
//! it parses, through the chat template and the tokenizer with loss masks, as training reads a
//! JSONL data file. Errors are fine; panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_data::samples::{parse_record, tokenize_conversation};
use sftctl_data::{ChatTemplate, ChatTokenizer, Flavor, write_tiny_tokenizer};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TOK: OnceLock<(ChatTokenizer, ChatTemplate)> = OnceLock::new();
    let (tok, template) = TOK.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-tok-{}", std::process::id()));
        write_tiny_tokenizer(&d, Flavor::Llama3).expect("tiny tokenizer");
        let t = ChatTokenizer::from_dir(&d).expect("load");
        let c = t.chat_template(None).expect("template");
        (t, c)
    });
    for line in String::from_utf8_lossy(data).lines() {
        if let Ok(messages) = parse_record(line) {
            let _ = tokenize_conversation(tok, template, &messages);
        }
    }
});
