//! `sftctl data inspect` as a library call: one rendered sample with its loss mask shown, the
//! length histogram and the dropped counts with reasons, as a printable (and serializable) report.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chat::ChatTemplate;
use crate::error::{DataError, Result};
use crate::samples::{
    DropCounts, DropReason, TokenizeOptions, assistant_spans, parse_record, tokenize_jsonl,
};
use crate::tokenizer::ChatTokenizer;

/// Marks around the text the loss counts, in [`InspectReport::rendered`].
pub const LOSS_OPEN: &str = "⟦";
pub const LOSS_CLOSE: &str = "⟧";

/// What [`inspect`] found.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub template: String,
    pub max_len: usize,
    pub samples: usize,
    pub tokens: u64,
    pub loss_tokens: u64,
    /// Shortest, median and longest kept sample in tokens.
    pub min_len: usize,
    pub median_len: usize,
    pub max_len_seen: usize,
    /// (lower, upper inclusive, count): power-of-two buckets of kept samples' lengths.
    pub histogram: Vec<(usize, usize, u64)>,
    pub dropped: DropCounts,
    /// Which kept sample is shown, and its 1-based line.
    pub shown_index: usize,
    pub shown_line: u64,
    pub shown_tokens: usize,
    pub shown_loss_tokens: usize,
    /// The rendered conversation with loss-counted text between [`LOSS_OPEN`] and [`LOSS_CLOSE`].
    pub rendered: String,
}

/// Tokenizes `path` as training would and reports on it, showing kept sample `show` (clamped to
/// the last one).
pub fn inspect(
    path: &Path,
    tok: &ChatTokenizer,
    template: &ChatTemplate,
    opts: &TokenizeOptions,
    show: usize,
) -> Result<InspectReport> {
    let file = tokenize_jsonl(path, tok, template, opts)?;
    let mut lens: Vec<usize> = file.samples.iter().map(|s| s.len()).collect();
    lens.sort_unstable();
    let mut histogram: Vec<(usize, usize, u64)> = Vec::new();
    for &l in &lens {
        let upper = l.next_power_of_two().max(16);
        let lower = if upper == 16 { 1 } else { upper / 2 + 1 };
        match histogram.last_mut() {
            Some(b) if b.1 == upper => b.2 += 1,
            _ => histogram.push((lower, upper, 1)),
        }
    }
    let (shown_index, shown_line, rendered, shown_tokens, shown_loss_tokens) =
        if file.samples.is_empty() {
            (0, 0, String::new(), 0, 0)
        } else {
            let i = show.min(file.samples.len() - 1);
            let line = file.lines[i];
            let text = fs_err::read_to_string(path)?;
            let raw = text.lines().nth(line as usize - 1).unwrap_or_default();
            let messages = parse_record(raw).map_err(|message| DataError::MalformedLine {
                path: path.to_owned(),
                line,
                message,
            })?;
            let (rendered_text, _) =
                assistant_spans(template, &messages).map_err(|e| DataError::MalformedLine {
                    path: path.to_owned(),
                    line,
                    message: e.to_string(),
                })?;
            let (_, offsets) = tok.encode_with_offsets(&rendered_text, false)?;
            let sample = &file.samples[i];
            (
                i,
                line,
                mark(&rendered_text, &offsets, &sample.loss_mask),
                sample.len(),
                sample.loss_tokens(),
            )
        };
    Ok(InspectReport {
        path: path.to_owned(),
        template: template.name().to_owned(),
        max_len: opts.max_len,
        samples: file.samples.len(),
        tokens: lens.iter().map(|&l| l as u64).sum(),
        loss_tokens: file.samples.iter().map(|s| s.loss_tokens() as u64).sum(),
        min_len: lens.first().copied().unwrap_or(0),
        median_len: lens.get(lens.len() / 2).copied().unwrap_or(0),
        max_len_seen: lens.last().copied().unwrap_or(0),
        histogram,
        dropped: file.dropped,
        shown_index,
        shown_line,
        shown_tokens,
        shown_loss_tokens,
        rendered,
    })
}

/// Inserts the loss marks into `text` at the token boundaries where the mask changes.
fn mark(text: &str, offsets: &[(usize, usize)], mask: &[bool]) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut pos = 0;
    let mut inside = false;
    let boundary = |mut p: usize| {
        while p < text.len() && !text.is_char_boundary(p) {
            p += 1;
        }
        p.min(text.len())
    };
    for (&(start, _), &m) in offsets.iter().zip(mask) {
        if m != inside {
            let at = boundary(start).max(pos);
            out.push_str(&text[pos..at]);
            out.push_str(if m { LOSS_OPEN } else { LOSS_CLOSE });
            pos = at;
            inside = m;
        }
    }
    out.push_str(&text[pos..]);
    if inside {
        out.push_str(LOSS_CLOSE);
    }
    out
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data set   {}", self.path.display())?;
        writeln!(
            f,
            "template   {}   max length {}",
            self.template, self.max_len
        )?;
        writeln!(
            f,
            "samples    {} kept, {} tokens, {} loss tokens ({:.1}%)",
            self.samples,
            self.tokens,
            self.loss_tokens,
            if self.tokens > 0 {
                100.0 * self.loss_tokens as f64 / self.tokens as f64
            } else {
                0.0
            }
        )?;
        writeln!(
            f,
            "lengths    min {}  median {}  max {}",
            self.min_len, self.median_len, self.max_len_seen
        )?;
        let d = &self.dropped;
        writeln!(
            f,
            "dropped    {} total: {} longer than {} tokens, {} without assistant tokens, {} malformed (skipped)",
            d.total(),
            d.too_long,
            self.max_len,
            d.no_loss_tokens,
            d.malformed
        )?;
        for (reason, line) in &d.examples {
            let why = match reason {
                DropReason::TooLong => "too long",
                DropReason::NoLossTokens => "no assistant tokens",
                DropReason::Malformed => "malformed",
            };
            writeln!(f, "           line {line}: {why}")?;
        }
        writeln!(f, "\nlength histogram (tokens)")?;
        let most = self.histogram.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        for &(lo, hi, n) in &self.histogram {
            let bar = "#".repeat(((n * 40).div_ceil(most)) as usize);
            writeln!(f, "  {lo:>6}-{hi:<6} {n:>8}  {bar}")?;
        }
        if self.samples > 0 {
            writeln!(
                f,
                "\nsample {} (line {}): {} tokens, {} counted by the loss, shown {}like this{}",
                self.shown_index,
                self.shown_line,
                self.shown_tokens,
                self.shown_loss_tokens,
                LOSS_OPEN,
                LOSS_CLOSE
            )?;
            writeln!(f, "{}", self.rendered)?;
        }
        Ok(())
    }
}
