//! Imported scores: the parser lives in `sftctl-ledger` (the runtime's evaluation jobs use it
//! too); re-exported here for the report and `sftctl import`.

pub use sftctl_ledger::import::{Imported, Scores, parse};
