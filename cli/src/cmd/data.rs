//! `sftctl data inspect`: the data pipeline's own report (`sftctl_data::inspect`) for a data set
//! and a model's tokenizer, so a user sees what the loss will count before spending GPU time.

use crate::args::DataInspectArgs;
use anyhow::Context;
use sftctl_data::ChatTokenizer;
use sftctl_data::samples::TokenizeOptions;
use std::io::Write;

/// Every failure here is about the user's files (a missing tokenizer, a bad line): exit code 1.
fn user(e: sftctl_data::DataError) -> crate::UserError {
    crate::UserError(e.to_string())
}

pub fn inspect(a: &DataInspectArgs) -> anyhow::Result<()> {
    let tok = ChatTokenizer::from_dir(&a.model).map_err(user)?;
    let template = tok.chat_template(a.template.as_deref()).map_err(user)?;
    let opts = TokenizeOptions {
        max_len: a.max_len,
        skip_malformed: a.skip_malformed,
    };
    let report =
        sftctl_data::inspect::inspect(&a.data, &tok, &template, &opts, a.sample).map_err(user)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}
