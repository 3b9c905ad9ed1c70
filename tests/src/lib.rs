//! The end-to-end test harness: a real Slurm cluster on loopback, sandboxes, and helpers that drive the built binaries.
