#!/usr/bin/env bash
# The project's test command (README): formatting, lints and every test, against the real
# Slurm test cluster and the real runtime. CI runs exactly this after installing packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sftctl-target}"

# The shared Slurm test cluster (idempotent); Slurm tests are mandatory where it can start.
if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/slurmctld ]; then
  bash tests/slurm/start.sh
  export SFTCTL_REQUIRE_SLURM=1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests drive the built binaries.
cargo build --workspace --bins
# The MPI-featured runtime for tests/tests/e2e_dp.rs (cargo test rebuilds the plain one).
cargo build -p sftctl-runtime --features mpi --bin sftctl-train && cp "$CARGO_TARGET_DIR/debug/sftctl-train" "$CARGO_TARGET_DIR/sftctl-train-mpi"
cargo test --workspace
# Data parallelism over MPI: 2 ranks vs 1, checksum mismatch, dead ranks (docs/distributed.md).
cargo test -p sftctl-runtime --features mpi --test dist_mpi
