//! Tokenizer files in Hugging Face layout: loading `tokenizer.json` + `tokenizer_config.json` (special
//! tokens, chat templates in every layout transformers reads) and making the project's tiny
//! byte-level BPE tokenizers. Knows nothing about chat data or packing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::chat::{ChatTemplate, GRANITE_TEMPLATE, LLAMA3_TEMPLATE, SpecialTokens};
use crate::error::{DataError, Result};

/// The pre-tokenization regex of Llama 3's tokenizer (tiktoken's cl100k-style split).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Which model family's special tokens and chat template a tiny tokenizer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// `<|begin_of_text|>` … `<|eot_id|>`, header markers, regular tokens first, specials after.
    Llama3,
    /// `<|end_of_text|>` (id 0), `<|start_of_role|>`/`<|end_of_role|>`, specials first.
    Granite,
}

impl Flavor {
    /// Special tokens in id order.
    fn special_tokens(self) -> &'static [&'static str] {
        match self {
            Flavor::Llama3 => &[
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>",
                "<|finetune_right_pad_id|>",
                "<|reserved_special_token_2|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eom_id|>",
                "<|eot_id|>",
                "<|python_tag|>",
            ],
            Flavor::Granite => &[
                "<|end_of_text|>",
                "<fim_prefix>",
                "<fim_middle>",
                "<fim_suffix>",
                "<fim_pad>",
                "<filename>",
                "<gh_stars>",
                "<issue_start>",
                "<issue_comment>",
                "<issue_closed>",
                "<jupyter_start>",
                "<jupyter_text>",
                "<jupyter_code>",
                "<jupyter_output>",
                "<empty_output>",
                "<commit_before>",
                "<commit_msg>",
                "<commit_after>",
                "<reponame>",
                "<|start_of_role|>",
                "<|end_of_role|>",
                "<|tool_call|>",
            ],
        }
    }

    /// (bos, eos, pad) token strings, as the real models' tokenizer configs name them.
    fn bos_eos_pad(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Flavor::Llama3 => (
                "<|begin_of_text|>",
                "<|eot_id|>",
                "<|finetune_right_pad_id|>",
            ),
            Flavor::Granite => ("<|end_of_text|>", "<|end_of_text|>", "<|end_of_text|>"),
        }
    }

    fn chat_template(self) -> &'static str {
        match self {
            Flavor::Llama3 => LLAMA3_TEMPLATE,
            Flavor::Granite => GRANITE_TEMPLATE,
        }
    }
}

/// What [`write_tiny_tokenizer`] made: the figures a model config needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TinyTokenizerInfo {
    pub flavor: Flavor,
    /// Every id the tokenizer can produce is below this (regular + special tokens).
    pub vocab_size: usize,
    pub bos_id: u32,
    pub eos_id: u32,
    pub pad_id: u32,
    /// Special tokens with their ids, in id order.
    pub special_tokens: Vec<(String, u32)>,
}

/// Number of BPE merges the tiny tokenizers learn on top of the 256 byte symbols.
pub const TINY_MERGES: usize = 512;

/// GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies use.
pub fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut next = 256u32;
    for b in 0..256u32 {
        map[b as usize] = if printable(b) {
            char::from_u32(b).expect("latin-1 code point")
        } else {
            let c = char::from_u32(next).expect("code point below 0x200");
            next += 1;
            c
        };
    }
    map
}

/// The small English-like corpus the tiny tokenizers are trained on: fixed prose plus the shapes
/// of the bundled quickstart tasks (numbers, arithmetic, role words), generated without randomness.
pub fn tiny_corpus() -> String {
    const PROSE: &str = "The model reads a question from the user and writes a short answer. \
        A helpful assistant answers the question, adds the numbers, reverses the word, counts the \
        letters and says what the result is. You are a helpful assistant. What is the sum of these \
        numbers? The answer is below. Please reverse the following word. How many letters are in \
        this word? Sort the list of words in order. Repeat the sentence back to me. The quick brown \
        fox jumps over the lazy dog. Training a small language model on chat data teaches it to \
        follow instructions. Each sample has a system prompt, a user turn and an assistant reply. \
        The loss counts only the tokens of the reply. Today is a good day to learn something new. \
        Write a function that returns the largest number in a list. Explain why the sky is blue. \
        Knowledge cutoff date and today date are part of the system message.";
    let words = [
        "apple",
        "banana",
        "cherry",
        "river",
        "mountain",
        "stone",
        "garden",
        "window",
        "silver",
        "rocket",
        "planet",
        "forest",
        "yellow",
        "purple",
        "orange",
        "little",
        "number",
        "letter",
        "answer",
        "question",
        "system",
        "user",
        "assistant",
        "tool",
        "result",
        "reverse",
        "count",
    ];
    let mut out = String::new();
    for _ in 0..3 {
        out.push_str(PROSE);
        out.push('\n');
    }
    for i in 0..400u32 {
        let a = (i * 37 + 11) % 100;
        let b = (i * 53 + 7) % 100;
        out.push_str(&format!("What is {a} + {b}? {a} + {b} = {}.\n", a + b));
        let w = words[(i as usize * 7) % words.len()];
        let rev: String = w.chars().rev().collect();
        out.push_str(&format!("Reverse the word \"{w}\": {rev}\n"));
        out.push_str(&format!("The word {w} has {} letters.\n", w.len()));
    }
    out
}

/// Learns `n_merges` BPE merges over byte-level words, deterministically: the most frequent
/// adjacent pair wins, ties go to the lexicographically smallest pair; stops early when no pair
/// occurs twice.
fn train_bpe(word_counts: &BTreeMap<String, u64>, n_merges: usize) -> Vec<(String, String)> {
    let mut words: Vec<(Vec<String>, u64)> = word_counts
        .iter()
        .map(|(w, &c)| (w.chars().map(String::from).collect(), c))
        .collect();
    let mut merges = Vec::with_capacity(n_merges);
    while merges.len() < n_merges {
        let mut pairs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (syms, c) in &words {
            for w in syms.windows(2) {
                *pairs.entry((&w[0], &w[1])).or_default() += c;
            }
        }
        // BTreeMap iterates pairs in ascending order; keep the first pair with the highest count.
        let best = pairs
            .iter()
            .fold(None::<((&str, &str), u64)>, |best, (&p, &c)| match best {
                Some((_, bc)) if bc >= c => best,
                _ => Some((p, c)),
            });
        let Some(((a, b), count)) = best else { break };
        if count < 2 {
            break;
        }
        let (a, b) = (a.to_owned(), b.to_owned());
        let merged = format!("{a}{b}");
        for (syms, _) in &mut words {
            let mut i = 0;
            while i + 1 < syms.len() {
                if syms[i] == a && syms[i + 1] == b {
                    syms[i] = merged.clone();
                    syms.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push((a, b));
    }
    merges
}

fn pre_tokenizer(flavor: Flavor) -> Result<PreTokenizerWrapper> {
    Ok(match flavor {
        Flavor::Llama3 => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| DataError::Encode {
                context: "Llama-3 split regex".into(),
                message: e.to_string(),
            })?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ]))
        }
        Flavor::Granite => ByteLevel::new(false, true, true).into(),
    })
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    fs_err::write(path, text + "\n")?;
    Ok(())
}

/// Trains the tiny byte-level BPE tokenizer of `flavor` on [`tiny_corpus`] and writes
/// `tokenizer.json`, `tokenizer_config.json` (with `chat_template`) and `special_tokens_map.json`
/// into `dir` (created if missing), the layout transformers' `AutoTokenizer` loads.
/// The same flavor always gives byte-identical files.
pub fn write_tiny_tokenizer(dir: &Path, flavor: Flavor) -> Result<TinyTokenizerInfo> {
    fs_err::create_dir_all(dir)?;
    let pre = pre_tokenizer(flavor)?;
    let mut word_counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in tiny_corpus().lines() {
        let mut pts = PreTokenizedString::from(line);
        pre.pre_tokenize(&mut pts).map_err(|e| DataError::Encode {
            context: "tiny corpus".into(),
            message: e.to_string(),
        })?;
        for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            *word_counts.entry(piece.to_owned()).or_default() += 1;
        }
    }
    let merges = train_bpe(&word_counts, TINY_MERGES);

    let specials = flavor.special_tokens();
    // Granite puts its special tokens first (id 0 is `<|end_of_text|>`), Llama 3 after the BPE vocab.
    let special_base = match flavor {
        Flavor::Granite => 0u32,
        Flavor::Llama3 => (256 + merges.len()) as u32,
    };
    let regular_base = match flavor {
        Flavor::Granite => specials.len() as u32,
        Flavor::Llama3 => 0,
    };
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let bytes = byte_to_char();
    for (i, c) in bytes.iter().enumerate() {
        vocab.insert(c.to_string(), regular_base + i as u32);
    }
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), regular_base + 256 + i as u32);
    }
    let special_ids: Vec<(String, u32)> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| ((*s).to_owned(), special_base + i as u32))
        .collect();
    if flavor == Flavor::Granite {
        // Granite's real vocabulary lists its specials in the model vocab too.
        for (s, id) in &special_ids {
            vocab.insert(s.clone(), *id);
        }
    }
    let id_of = |s: &str| {
        special_ids
            .iter()
            .find(|(t, _)| t == s)
            .map(|(_, id)| *id)
            .expect("flavor special")
    };
    let (bos, eos, pad) = flavor.bos_eos_pad();

    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .ignore_merges(true)
        .build()
        .map_err(|e| tok_err(dir, e))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    match flavor {
        Flavor::Llama3 => {
            let tp = TemplateProcessing::builder()
                .try_single(format!("{bos} $A"))
                .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B:1")))
                .map_err(|e| tok_err(dir, e))?
                .special_tokens(vec![(bos, id_of(bos))])
                .build()
                .map_err(|e| tok_err(dir, e))?;
            tokenizer.with_post_processor(Some(tp));
        }
        Flavor::Granite => {
            tokenizer.with_post_processor(Some(
                tokenizers::processors::byte_level::ByteLevel::new(false, true, false),
            ));
        }
    }
    let added: Vec<AddedToken> = specials
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    tokenizer
        .add_special_tokens(added)
        .map_err(|e| tok_err(dir, e))?;
    for (s, id) in &special_ids {
        let got = tokenizer.token_to_id(s);
        if got != Some(*id) {
            return Err(tok_err(
                dir,
                format!("special token `{s}` got id {got:?}, expected {id}"),
            ));
        }
    }
    let tok_path = dir.join("tokenizer.json");
    tokenizer
        .save(&tok_path, true)
        .map_err(|e| tok_err(&tok_path, e))?;

    let added_decoder: serde_json::Map<String, Json> = special_ids
        .iter()
        .map(|(s, id)| {
            (
                id.to_string(),
                json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": true}),
            )
        })
        .collect();
    let config = json!({
        "add_bos_token": flavor == Flavor::Llama3,
        "add_eos_token": false,
        "added_tokens_decoder": added_decoder,
        "bos_token": bos,
        "chat_template": flavor.chat_template(),
        "clean_up_tokenization_spaces": false,
        "eos_token": eos,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "pad_token": pad,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write_json(&dir.join("tokenizer_config.json"), &config)?;
    let entry = |s: &str| json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false});
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": entry(bos), "eos_token": entry(eos), "pad_token": entry(pad)}),
    )?;
    Ok(TinyTokenizerInfo {
        flavor,
        vocab_size: tokenizer.get_vocab_size(true),
        bos_id: id_of(bos),
        eos_id: id_of(eos),
        pad_id: id_of(pad),
        special_tokens: special_ids,
    })
}

/// The files of a tokenizer directory besides `additional_chat_templates/`.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// The byte range `[start, end)` of the text a token covers.
pub type ByteRange = (usize, usize);

/// A model's tokenizer: `tokenizer.json`, its special tokens and its chat templates.
#[derive(Debug, Clone)]
pub struct ChatTokenizer {
    dir: PathBuf,
    inner: Tokenizer,
    special: SpecialTokens,
    /// Named chat templates; the one transformers uses by default is under `default`.
    templates: BTreeMap<String, String>,
    fingerprint: String,
}

/// A special token in `tokenizer_config.json` is either a string or an AddedToken dict.
fn token_string(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// What in a `post_processor` would make the tokenizers library panic while encoding (it
/// does not check on load): a template naming a special token the processor does not define,
/// or a special token whose `ids` and `tokens` differ in length. Found by fuzz/ target
/// tokenizer_json.
fn post_processor_problem(p: &Json) -> Option<String> {
    match p.get("type").and_then(Json::as_str) {
        Some("Sequence") => p
            .get("processors")
            .and_then(Json::as_array)
            .and_then(|list| list.iter().find_map(post_processor_problem)),
        Some("TemplateProcessing") => {
            let defined = p.get("special_tokens").and_then(Json::as_object);
            for (name, tok) in defined.into_iter().flatten() {
                let len = |k: &str| tok.get(k).and_then(Json::as_array).map(Vec::len);
                if len("ids") != len("tokens") {
                    return Some(format!(
                        "post_processor special token `{name}` has {:?} ids but {:?} tokens",
                        len("ids"),
                        len("tokens")
                    ));
                }
            }
            for key in ["single", "pair"] {
                let ids: Vec<String> = match p.get(key) {
                    Some(Json::Array(pieces)) => pieces
                        .iter()
                        .filter_map(|piece| piece.get("SpecialToken")?.get("id")?.as_str())
                        .map(str::to_owned)
                        .collect(),
                    // The string form: `[CLS]:0 $A:0 [SEP]:0`.
                    Some(Json::String(t)) => t
                        .split_whitespace()
                        .filter(|w| !w.starts_with('$'))
                        .map(|w| w.split_once(':').map_or(w, |(id, _)| id).to_owned())
                        .collect(),
                    _ => Vec::new(),
                };
                if let Some(id) = ids
                    .iter()
                    .find(|id| !defined.is_some_and(|d| d.contains_key(id.as_str())))
                {
                    return Some(format!(
                        "post_processor template `{key}` uses special token `{id}`, which its `special_tokens` does not define"
                    ));
                }
            }
            None
        }
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text = fs_err::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| DataError::Json {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ChatTokenizer {
    /// Loads a tokenizer directory in Hugging Face layout. Chat templates are read the way
    /// transformers reads them: `chat_template.jinja` and `additional_chat_templates/*.jinja`
    /// win over `tokenizer_config.json`'s `chat_template`, which is a string or a list of
    /// `{"name", "template"}`. A directory without any template loads; asking it for a template
    /// is the error.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(tok_err(&tok_path, "file not found"));
        }
        let tok_bytes = fs_err::read(&tok_path)?;
        // The tokenizers library panics instead of failing on some malformed files (a
        // `decoder` that is not valid JSON or not UTF-8: `expect("Helper")`; found by fuzz/
        // target tokenizer_json). Check encoding and syntax first, for a message with line and
        // column, and turn any panic left into an error.
        let text = std::str::from_utf8(&tok_bytes)
            .map_err(|e| tok_err(&tok_path, format!("not UTF-8 text: {e}")))?;
        let json: Json = serde_json::from_str(text).map_err(|e| tok_err(&tok_path, e))?;
        if let Some(problem) = json.get("post_processor").and_then(post_processor_problem) {
            return Err(tok_err(&tok_path, problem));
        }
        let inner = std::panic::catch_unwind(|| Tokenizer::from_bytes(&tok_bytes))
            .map_err(|p| {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tok_err(
                    &tok_path,
                    format!(
                        "not a tokenizer the tokenizers library can read (it panicked: {what})"
                    ),
                )
            })?
            .map_err(|e| tok_err(&tok_path, e))?;
        let mut hasher = Sha256::new();
        hasher.update(&tok_bytes);

        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.is_file() {
            hasher.update(fs_err::read(&cfg_path)?);
            read_json(&cfg_path)?
        } else {
            Json::Object(Default::default())
        };
        let map_path = dir.join("special_tokens_map.json");
        let map = if map_path.is_file() {
            read_json(&map_path)?
        } else {
            Json::Object(Default::default())
        };
        let pick = |key: &str| token_string(config.get(key)).or_else(|| token_string(map.get(key)));
        let special = SpecialTokens {
            bos_token: pick("bos_token"),
            eos_token: pick("eos_token"),
            unk_token: pick("unk_token"),
            pad_token: pick("pad_token"),
        };

        let mut templates = BTreeMap::new();
        match config.get("chat_template") {
            Some(Json::String(s)) => {
                templates.insert("default".to_owned(), s.clone());
            }
            Some(Json::Array(list)) => {
                for item in list {
                    let (Some(name), Some(t)) = (
                        item.get("name").and_then(Json::as_str),
                        item.get("template").and_then(Json::as_str),
                    ) else {
                        return Err(DataError::Json {
                            path: cfg_path,
                            message:
                                "`chat_template` list entries need `name` and `template` strings"
                                    .into(),
                        });
                    };
                    templates.insert(name.to_owned(), t.to_owned());
                }
            }
            Some(Json::Null) | None => {}
            Some(_) => {
                return Err(DataError::Json {
                    path: cfg_path,
                    message: "`chat_template` is neither a string nor a list".into(),
                });
            }
        }
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            templates.insert("default".to_owned(), fs_err::read_to_string(&jinja)?);
        }
        let extra_dir = dir.join("additional_chat_templates");
        if extra_dir.is_dir() {
            let mut entries: Vec<PathBuf> = fs_err::read_dir(&extra_dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for p in entries {
                if p.extension().is_some_and(|e| e == "jinja")
                    && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                {
                    templates.insert(stem.to_owned(), fs_err::read_to_string(&p)?);
                }
            }
        }
        for (name, t) in &templates {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(t.as_bytes());
            hasher.update([0]);
        }
        Ok(Self {
            dir: dir.to_owned(),
            inner,
            special,
            templates,
            fingerprint: hex::encode(hasher.finalize()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies the tokenizer files this directory has (`tokenizer.json`, `tokenizer_config.json`,
    /// `special_tokens_map.json`, `chat_template.jinja`, `additional_chat_templates/`) into `to`,
    /// as a saved model carries them.
    pub fn copy_files_to(&self, to: &Path) -> Result<()> {
        fs_err::create_dir_all(to)?;
        for name in TOKENIZER_FILES {
            let from = self.dir.join(name);
            if from.is_file() {
                fs_err::copy(&from, to.join(name))?;
            }
        }
        let extra = self.dir.join("additional_chat_templates");
        if extra.is_dir() {
            fs_err::create_dir_all(to.join("additional_chat_templates"))?;
            for e in fs_err::read_dir(&extra)? {
                let e = e?;
                if e.path().is_file() {
                    fs_err::copy(
                        e.path(),
                        to.join("additional_chat_templates").join(e.file_name()),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The `tokenizers` crate's tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// SHA-256 over `tokenizer.json`, `tokenizer_config.json` and the chat templates: the
    /// tokenizer's part of a cache key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Regular plus added tokens: every id is below this.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special
            .bos_token
            .as_deref()
            .and_then(|t| self.token_id(t))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.special
            .eos_token
            .as_deref()
            .and_then(|t| self.token_id(t))
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.special
            .pad_token
            .as_deref()
            .and_then(|t| self.token_id(t))
    }

    /// Names of the chat templates the directory carries (`default` is transformers' default).
    pub fn template_names(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }

    /// The chat template transformers would pick: `name` if given, else `default`. A model without
    /// a template is an error; pass [`ChatTemplate::new`] a template source to use another one.
    pub fn chat_template(&self, name: Option<&str>) -> Result<ChatTemplate> {
        if self.templates.is_empty() {
            return Err(DataError::NoChatTemplate {
                dir: self.dir.clone(),
            });
        }
        let wanted = name.unwrap_or("default");
        let source = self
            .templates
            .get(wanted)
            .ok_or_else(|| DataError::UnknownTemplate {
                dir: self.dir.clone(),
                wanted: wanted.to_owned(),
                available: self.templates.keys().cloned().collect(),
            })?;
        ChatTemplate::new(wanted, source, self.special.clone())
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (Llama 3's bos).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text, add_special_tokens)?.0)
    }

    /// Token ids with the byte range of `text` each token covers.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<(Vec<u32>, Vec<ByteRange>)> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| DataError::Encode {
                context: self.dir.display().to_string(),
                message: e.to_string(),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| DataError::Encode {
                context: self.dir.display().to_string(),
                message: e.to_string(),
            })
    }
}
