//! Results of a sweep read from the ledger: per-run scores, validation losses and training
//! curves ([`collect`]), the paper-style table ([`table`]) and its renderings ([`render`]),
//! early-dynamics statistics and rankings ([`early`]) and imported scores ([`import`]). Reads the ledger only through `sftctl-ledger`; never
//! calls Slurm (a report works on a copied ledger).

pub mod collect;
pub mod early;
pub mod html;
pub mod import;
pub mod plot;
pub mod render;
pub mod stats;
pub mod table;

pub use collect::{Outcome, RunData, collect_sweep};
pub use table::{Checkpoint, Table, TableOptions, build_table};
