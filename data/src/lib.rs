//! The SFT data pipeline without a tensor library: tokenizer, chat templates, chat data, loss masks, caches and the exact-batch packer.
//!
//! Nothing here depends on Burn or any tensor crate, so the login node (`sftctl data inspect`,
//! `sftctl plan`) uses the same code as the trainer.

pub mod batch;
pub mod cache;
pub mod chat;
pub mod error;
pub mod inspect;
pub mod pack;
pub mod quickstart;
pub mod samples;
pub mod tokenizer;

pub use error::{DataError, Result};
