//! The ledger: the versioned directory tree on the shared filesystem that jobs write and the CLI
//! reads. The only code that writes under the ledger root; it knows nothing about Slurm or specs.
//!
//! Documents are written to a temporary file, fsynced and renamed ([`io::write_json_atomic`]);
//! logs are JSON lines appended by a single writer ([`io::JsonlWriter`]); readers tolerate a torn
//! last line and missing files. The only lock is an `O_EXCL` claim file with stale detection
//! ([`claim::Claim`]), which cannot hang on NFS. See `docs/ledger.md` for the layout.

pub mod claim;
pub mod evals;
pub mod failpoint;
pub mod import;
pub mod io;
pub mod layout;
pub mod read;
pub mod records;
pub mod results;
pub mod writer;

pub use claim::Claim;
pub use layout::{Ledger, RunDir, SweepDir};
pub use read::{RunSnapshot, read_run};
pub use records::*;
pub use writer::RunWriter;

use std::path::PathBuf;

/// Version of every record format in this crate; bumped when a record changes incompatibly.
/// Readers accept unknown fields and fill missing optional ones, so additions need no bump.
pub const FORMAT_VERSION: u32 = 1;

/// What can go wrong reading or writing the ledger. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("`{path}` is not valid JSON for this record: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("`{path}` has ledger format version {found}, this sftctl reads up to {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("`{path}` is claimed by pid {pid} on `{host}` since {since}")]
    Claimed {
        path: PathBuf,
        pid: u32,
        host: String,
        since: String,
    },
    #[error(
        "`{path}` is a symbolic link or leaves the ledger; sftctl does not write through links planted in a ledger"
    )]
    Escape { path: PathBuf },
    #[error("`{0}` is not set; the runtime finds its run directory through it")]
    MissingEnv(&'static str),
}

/// Result alias for ledger operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
