//! Fuzzes the tokenizer loader with the input as `tokenizer.json` (beside the tiny Llama 3
//! `tokenizer_config.json`), then encodes and decodes with what loaded. Errors are fine;
//! panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_data::{ChatTokenizer, Flavor, write_tiny_tokenizer};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let d = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-tokjson-{}", std::process::id()));
        write_tiny_tokenizer(&d, Flavor::Llama3).expect("tiny tokenizer");
        d
    });
    std::fs::write(d.join("tokenizer.json"), data).unwrap();
    if let Ok(t) = ChatTokenizer::from_dir(d) {
        let _ = t.vocab_size();
        let _ = (t.bos_id(), t.eos_id(), t.pad_id());
        for text in ["hello world", "<|eot_id|> ab\u{e9}\u{1f600}", ""] {
            if let Ok(ids) = t.encode(text, true) {
                let _ = t.decode(&ids, false);
                let _ = t.decode(&ids, true);
            }
        }
        let _ = t.decode(&[0, 1, 2, u32::MAX], false);
    }
});
