//! `sftctl data inspect` without the CLI: `cargo run -p sftctl-data --example inspect -- TOKENIZER_DIR DATA.jsonl [MAX_LEN] [SAMPLE]`.

use std::path::Path;

use sftctl_data::ChatTokenizer;
use sftctl_data::inspect::inspect;
use sftctl_data::samples::TokenizeOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tok_dir, data, rest @ ..] = args.as_slice() else {
        return Err("usage: inspect TOKENIZER_DIR DATA.jsonl [MAX_LEN] [SAMPLE]".into());
    };
    let max_len = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(4096);
    let show = rest.get(1).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let tok = ChatTokenizer::from_dir(Path::new(tok_dir))?;
    let template = tok.chat_template(None)?;
    let opts = TokenizeOptions {
        max_len,
        skip_malformed: true,
    };
    print!(
        "{}",
        inspect(Path::new(data), &tok, &template, &opts, show)?
    );
    Ok(())
}
