//! Writes the tiny Llama-3 and Granite tokenizers into `<dir>/tiny-llama3` and `<dir>/tiny-granite`
//! (the committed test fixtures: `cargo run -p sftctl-data --example write_tiny_tokenizers -- data/tests/fixtures`).

use std::path::PathBuf;

use sftctl_data::tokenizer::{Flavor, write_tiny_tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: write_tiny_tokenizers <dir>")?,
    );
    for (name, flavor) in [
        ("tiny-llama3", Flavor::Llama3),
        ("tiny-granite", Flavor::Granite),
    ] {
        let info = write_tiny_tokenizer(&dir.join(name), flavor)?;
        eprintln!(
            "{name}: vocab {} bos {} eos {} pad {}",
            info.vocab_size, info.bos_id, info.eos_id, info.pad_id
        );
    }
    Ok(())
}
