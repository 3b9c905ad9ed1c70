//! Chat data files to token ids and loss masks: JSONL parsing (chat messages or prompt/completion
//! pairs), assistant-only masks found by rendering prefixes of the conversation, and the
//! drop/skip accounting. Knows nothing about caches or batches.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chat::{ChatTemplate, Message, RenderOptions};
use crate::error::{DataError, Result};
use crate::tokenizer::ChatTokenizer;

/// One tokenized conversation: ids and which of them the loss counts (aligned with the ids, as
/// Hugging Face labels are: `loss_mask[t]` means token `t` is a target).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokenized {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Tokenized {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    pub fn loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m).count()
    }

    /// Hugging Face labels: the id where the loss counts, -100 elsewhere.
    pub fn labels(&self) -> Vec<i64> {
        self.input_ids
            .iter()
            .zip(&self.loss_mask)
            .map(|(&id, &m)| if m { i64::from(id) } else { -100 })
            .collect()
    }
}

/// Why a sample was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// More tokens than the maximum length (never cut).
    TooLong,
    /// No assistant token to learn from.
    NoLossTokens,
    /// Unparseable line or a template error, skipped because the option says so.
    Malformed,
}

/// Counts of dropped samples by reason, plus the first few line numbers of each for `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    pub too_long: u64,
    pub no_loss_tokens: u64,
    pub malformed: u64,
    /// (reason, 1-based line) of the first drops, at most [`DropCounts::EXAMPLES`].
    pub examples: Vec<(DropReason, u64)>,
}

impl DropCounts {
    pub const EXAMPLES: usize = 10;

    pub fn total(&self) -> u64 {
        self.too_long + self.no_loss_tokens + self.malformed
    }

    pub fn add(&mut self, reason: DropReason, line: u64) {
        match reason {
            DropReason::TooLong => self.too_long += 1,
            DropReason::NoLossTokens => self.no_loss_tokens += 1,
            DropReason::Malformed => self.malformed += 1,
        }
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push((reason, line));
        }
    }
}

/// How a data file is turned into samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeOptions {
    /// Samples with more tokens are dropped and counted.
    pub max_len: usize,
    /// Skip and count malformed lines instead of failing on the first one.
    pub skip_malformed: bool,
}

/// One line of a chat data file: `{"messages": [...]}` or `{"prompt", "completion"[, "system"]}`.
pub fn parse_record(line: &str) -> std::result::Result<Vec<Message>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PromptCompletion {
        prompt: String,
        completion: String,
        #[serde(default)]
        system: Option<String>,
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    if let Some(messages) = obj.get("messages") {
        let messages: Vec<Message> =
            serde_json::from_value(messages.clone()).map_err(|e| format!("bad `messages`: {e}"))?;
        if messages.is_empty() {
            return Err("`messages` is empty".into());
        }
        return Ok(messages);
    }
    if obj.contains_key("prompt") {
        let pc: PromptCompletion =
            serde_json::from_value(value).map_err(|e| format!("bad prompt/completion: {e}"))?;
        let mut messages = Vec::new();
        if let Some(system) = pc.system {
            messages.push(Message::new("system", system));
        }
        messages.push(Message::new("user", pc.prompt));
        messages.push(Message::new("assistant", pc.completion));
        return Ok(messages);
    }
    Err("expected `messages` or `prompt`/`completion`".into())
}

/// Why one conversation could not be tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleError {
    /// Rendering the first `upto` messages is not a prefix of the whole rendering.
    Unstable {
        upto: usize,
    },
    Template(String),
}

impl std::fmt::Display for SampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleError::Unstable { upto } => {
                write!(f, "chat template is not prefix-stable at message {upto}")
            }
            SampleError::Template(m) => write!(f, "{m}"),
        }
    }
}

/// The rendered conversation and the byte ranges of the assistant replies in it.
///
/// A reply's range runs from the end of the conversation rendered up to it with the generation
/// prompt to the end of the conversation rendered through it, less trailing whitespace: the
/// reply text plus the template's end-of-turn token, never a role marker. Each partial rendering
/// must be a prefix of the next and of the whole, or the template is rejected as unstable.
pub fn assistant_spans(
    template: &ChatTemplate,
    messages: &[Message],
) -> std::result::Result<(String, Vec<(usize, usize)>), SampleError> {
    let render = |msgs: &[Message], gen_prompt: bool| {
        template
            .render(msgs, &RenderOptions::generation_prompt(gen_prompt))
            .map_err(|e| SampleError::Template(e.to_string()))
    };
    let full = render(messages, false)?;
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = render(&messages[..i], true)?;
        let through = render(&messages[..=i], false)?;
        if !through.starts_with(&before) || !full.starts_with(&through) {
            return Err(SampleError::Unstable { upto: i });
        }
        let end = through.trim_end().len().max(before.len());
        spans.push((before.len(), end));
    }
    Ok((full, spans))
}

/// Renders and tokenizes a conversation the way `apply_chat_template(tokenize=True)` does and
/// marks the tokens that overlap an assistant reply (see [`assistant_spans`]).
pub fn tokenize_conversation(
    tok: &ChatTokenizer,
    template: &ChatTemplate,
    messages: &[Message],
) -> std::result::Result<Tokenized, SampleError> {
    let (text, spans) = assistant_spans(template, messages)?;
    let (input_ids, offsets) = tok
        .encode_with_offsets(&text, false)
        .map_err(|e| SampleError::Template(e.to_string()))?;
    let loss_mask = offsets
        .iter()
        .map(|&(start, end)| spans.iter().any(|&(s, e)| end > s && start < e))
        .collect();
    Ok(Tokenized {
        input_ids,
        loss_mask,
    })
}

/// The samples of one file, in file order, with the line each came from.
#[derive(Debug, Clone, Default)]
pub struct TokenizedFile {
    pub samples: Vec<Tokenized>,
    /// 1-based line number of each sample.
    pub lines: Vec<u64>,
    pub dropped: DropCounts,
}

/// Reads a JSONL chat file and tokenizes every line. Blank lines are ignored. A malformed line
/// is an error naming `path:line` unless `opts.skip_malformed`.
pub fn tokenize_jsonl(
    path: &Path,
    tok: &ChatTokenizer,
    template: &ChatTemplate,
    opts: &TokenizeOptions,
) -> Result<TokenizedFile> {
    let reader = std::io::BufReader::new(fs_err::File::open(path)?);
    let mut out = TokenizedFile::default();
    let malformed = |line: u64, message: String| DataError::MalformedLine {
        path: PathBuf::from(path),
        line,
        message,
    };
    for (i, line) in reader.lines().enumerate() {
        let lineno = i as u64 + 1;
        let line = line.map_err(|e| malformed(lineno, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let result = parse_record(&line)
            .and_then(|m| tokenize_conversation(tok, template, &m).map_err(|e| e.to_string()));
        let sample = match result {
            Ok(s) => s,
            Err(_) if opts.skip_malformed => {
                out.dropped.add(DropReason::Malformed, lineno);
                continue;
            }
            Err(message) => return Err(malformed(lineno, message)),
        };
        if sample.len() > opts.max_len {
            out.dropped.add(DropReason::TooLong, lineno);
        } else if sample.loss_tokens() == 0 {
            out.dropped.add(DropReason::NoLossTokens, lineno);
        } else {
            out.samples.push(sample);
            out.lines.push(lineno);
        }
    }
    Ok(out)
}
