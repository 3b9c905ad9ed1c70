//! The bundled quickstart data: small synthetic chat tasks a tiny model can learn (adding,
//! reversing, counting, sorting, casing), generated from a seed, with a held-out split that
//! shares no conversation with the training split. Nothing is downloaded.

use std::collections::BTreeSet;
use std::path::Path;

use crate::chat::Message;
use crate::error::Result;
use crate::pack::Rng;

const WORDS: &[&str] = &[
    "apple", "banana", "cherry", "river", "mountain", "stone", "garden", "window", "silver",
    "rocket", "planet", "forest", "yellow", "purple", "orange", "little", "number", "letter",
    "answer", "question", "cloud", "tiger", "lemon", "paper", "pencil", "bridge", "candle",
    "dragon", "engine", "finger",
];

const SYSTEMS: &[&str] = &[
    "You are a helpful assistant.",
    "Answer with the result only.",
    "Be brief.",
];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

fn task(rng: &mut Rng) -> (String, String) {
    match rng.below(5) {
        0 => {
            let (a, b) = (rng.below(100), rng.below(100));
            (format!("What is {a} + {b}?"), format!("{}", a + b))
        }
        1 => {
            let w = pick(rng, WORDS);
            (
                format!("Reverse the word \"{w}\"."),
                w.chars().rev().collect(),
            )
        }
        2 => {
            let w = pick(rng, WORDS);
            (
                format!("How many letters are in the word \"{w}\"?"),
                format!("{}", w.len()),
            )
        }
        3 => {
            let mut xs: Vec<u64> = (0..3).map(|_| rng.below(50)).collect();
            let q = format!(
                "Sort these numbers: {}.",
                xs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            );
            xs.sort_unstable();
            (
                q,
                xs.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            )
        }
        _ => {
            let w = pick(rng, WORDS);
            (
                format!("Write \"{w}\" in capital letters."),
                w.to_uppercase(),
            )
        }
    }
}

/// One conversation: an optional system prompt, then one or two task turns.
fn conversation(rng: &mut Rng) -> Vec<Message> {
    let mut messages = Vec::new();
    if rng.below(3) == 0 {
        messages.push(Message::new("system", pick(rng, SYSTEMS)));
    }
    let turns = if rng.below(4) == 0 { 2 } else { 1 };
    for _ in 0..turns {
        let (q, a) = task(rng);
        messages.push(Message::new("user", q));
        messages.push(Message::new("assistant", a));
    }
    messages
}

/// `train` and `eval` conversations from `seed`; no conversation appears twice in either split
/// or in both.
pub fn generate(train: usize, eval: usize, seed: u64) -> (Vec<Vec<Message>>, Vec<Vec<Message>>) {
    let mut rng = Rng::new(seed);
    let mut seen = BTreeSet::new();
    let mut take = |n: usize, rng: &mut Rng| {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let c = conversation(rng);
            let key = serde_json::to_string(&c).expect("messages serialize");
            if seen.insert(key) {
                out.push(c);
            }
        }
        out
    };
    let train_set = take(train, &mut rng);
    let eval_set = take(eval, &mut rng);
    (train_set, eval_set)
}

/// JSONL lines `{"messages": [...]}`.
pub fn to_jsonl(conversations: &[Vec<Message>]) -> String {
    conversations
        .iter()
        .map(|c| {
            serde_json::to_string(&serde_json::json!({ "messages": c }))
                .expect("messages serialize")
                + "\n"
        })
        .collect()
}

/// The committed quickstart files: `train.jsonl` (400) and `eval.jsonl` (100) under `dir`.
pub const QUICKSTART_SEED: u64 = 20_241_217;

pub fn write_quickstart(dir: &Path) -> Result<()> {
    fs_err::create_dir_all(dir)?;
    let (train, eval) = generate(400, 100, QUICKSTART_SEED);
    fs_err::write(dir.join("train.jsonl"), to_jsonl(&train))?;
    fs_err::write(dir.join("eval.jsonl"), to_jsonl(&eval))?;
    Ok(())
}
