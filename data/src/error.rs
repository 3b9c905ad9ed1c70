//! The crate's one error type: every variant names the file, line or value a person has to fix.

use std::path::PathBuf;

/// Errors of the data pipeline.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot read tokenizer `{path}`: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizer error on `{context}`: {message}")]
    Encode { context: String, message: String },
    #[error("bad JSON in `{path}`: {message}")]
    Json { path: PathBuf, message: String },
    #[error(
        "`{dir}` has no chat template (looked for `chat_template.jinja` and `chat_template` in `tokenizer_config.json`)\nhint: name a template explicitly"
    )]
    NoChatTemplate { dir: PathBuf },
    #[error("`{dir}` has chat templates {available:?} but none named `{wanted}`")]
    UnknownTemplate {
        dir: PathBuf,
        wanted: String,
        available: Vec<String>,
    },
    #[error("chat template `{name}`: {message}")]
    Template { name: String, message: String },
    #[error("{path}:{line}: {message}")]
    MalformedLine {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "{path}:{line}: chat template is not prefix-stable: rendering the first {upto} messages is not a prefix of the whole conversation"
    )]
    UnstableTemplate {
        path: PathBuf,
        line: u64,
        upto: usize,
    },
    #[error("cache `{path}`: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("invalid packing setting: {0}")]
    Packing(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
