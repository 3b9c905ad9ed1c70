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
cargo test --workspace
