//! The ledger: the versioned directory tree on the shared filesystem that jobs write and the CLI reads. The only code that writes under the ledger root.
