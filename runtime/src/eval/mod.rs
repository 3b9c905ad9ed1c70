//! Multiple-choice evaluation in the MMLU format, scored by log-likelihood as
//! lm-evaluation-harness scores it: [`mmlu`] reads the data and lays out the prompts, [`score`]
//! tokenizes context and continuation and sums the continuation's log-probabilities with the
//! model. [`job`] and [`required`] (the spec's evaluations, run as jobs) write the results into
//! the ledger.

pub mod job;
pub mod mmlu;
pub mod required;
pub mod score;

pub use mmlu::{Question, load_questions, prompt};
pub use score::{EvalOptions, MmluReport, QuestionResult, evaluate};

/// What can go wrong in an evaluation. Every variant names the file or value.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("`{0}` holds no questions")]
    Empty(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
