//! Tokenization throughput (samples/s, one thread): rendering + encoding like
//! `apply_chat_template(tokenize=True)`, and the full sample path with assistant-only masks.
//!
//! `cargo bench -p sftctl-data --bench data_tokenize -- --bench --out DIR` writes the data sets to
//! DIR (compare with `bench/data_tokenize_hf.py DIR`); under `cargo test` it runs at smoke size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sftctl_data::chat::{Message, RenderOptions};
use sftctl_data::quickstart::{generate, to_jsonl};
use sftctl_data::samples::{parse_record, tokenize_conversation};
use sftctl_data::tokenizer::{ChatTokenizer, tiny_corpus};

fn long_conversations(n: usize) -> Vec<Vec<Message>> {
    let corpus = tiny_corpus();
    let chars: Vec<char> = corpus.chars().collect();
    (0..n)
        .map(|i| {
            let at = |k: usize, len: usize| -> String {
                let start = (i * 7919 + k * 104_729) % (chars.len() - len);
                chars[start..start + len].iter().collect()
            };
            vec![
                Message::new("system", "You are a helpful assistant."),
                Message::new("user", at(0, 1200)),
                Message::new("assistant", at(1, 1500)),
                Message::new("user", at(2, 300)),
                Message::new("assistant", at(3, 900)),
            ]
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| PathBuf::from(&args[i + 1]));
    let (n_short, n_long, reps) = if full {
        (20_000, 2_000, 5)
    } else {
        (500, 50, 1)
    };
    let dir = out.unwrap_or_else(|| std::env::temp_dir().join("sftctl-bench-tokenize"));
    fs_err::create_dir_all(&dir).unwrap();
    let (short, _) = generate(n_short, 0, 7);
    let sets = [("short", short), ("long", long_conversations(n_long))];
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    println!(
        "| tokenizer | data | samples | tokens/sample | render+encode samples/s | with loss masks samples/s |"
    );
    println!("|---|---|---|---|---|---|");
    for tok_name in ["tiny-llama3", "tiny-granite"] {
        let tok = ChatTokenizer::from_dir(&fixtures.join(tok_name)).unwrap();
        let template = tok.chat_template(None).unwrap();
        for (name, convs) in &sets {
            fs_err::write(dir.join(format!("{name}.jsonl")), to_jsonl(convs)).unwrap();
            // Parse from the JSONL text as training does.
            let text = fs_err::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
            let parsed: Vec<Vec<Message>> =
                text.lines().map(|l| parse_record(l).unwrap()).collect();
            let mut tokens = 0usize;
            let mut plain = Vec::new();
            let mut masked = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                tokens = 0;
                for m in &parsed {
                    tokens += template
                        .apply(&tok, m, &RenderOptions::default())
                        .unwrap()
                        .len();
                }
                plain.push(parsed.len() as f64 / t.elapsed().as_secs_f64());
                let t = Instant::now();
                for m in &parsed {
                    std::hint::black_box(tokenize_conversation(&tok, &template, m).unwrap());
                }
                masked.push(parsed.len() as f64 / t.elapsed().as_secs_f64());
            }
            println!(
                "| {tok_name} | {name} | {} | {:.0} | {:.0} | {:.0} |",
                parsed.len(),
                tokens as f64 / parsed.len() as f64,
                median(plain),
                median(masked)
            );
        }
    }
    eprintln!("data sets written to {}", dir.display());
}
