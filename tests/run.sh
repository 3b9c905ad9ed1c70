#!/usr/bin/env bash
# The project's test command (README): formatting, lints and every test, against the real
# Slurm test cluster and the real runtime. CI runs exactly this after installing packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sftctl-target}"

# The shared Slurm test cluster (idempotent); Slurm tests are mandatory where it can start.
if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/slurmctld ]; then
  bash tests/slurm/start.sh
  # The cluster is the tests' own: jobs an interrupted earlier run left (a job that requeues
  # itself runs forever) would hold its two nodes.
  squeue -h -o %i | xargs -r scancel || true
  export SFTCTL_REQUIRE_SLURM=1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests drive the built binaries.
cargo build --workspace --bins
# The MPI-featured runtime for tests/tests/e2e_dp.rs (cargo test rebuilds the plain one).
cargo build -p sftctl-runtime --features mpi --bin sftctl-train && cp "$CARGO_TARGET_DIR/debug/sftctl-train" "$CARGO_TARGET_DIR/sftctl-train-mpi"
cargo test --workspace --no-fail-fast
# Data parallelism over MPI: 2 ranks vs 1, checksum mismatch, dead ranks (docs/distributed.md).
cargo test -p sftctl-runtime --features mpi --test dist_mpi
# ZeRO-1 over MPI: sharded AdamW on 2 ranks vs unsharded on 1, sharded checkpoints (same doc);
# bf16 on 2 ranks vs 1 (docs/gpu.md).
cargo test -p sftctl-runtime --features mpi --test zero_mpi
# The libtorch backend (tch-CPU): the model's parity with transformers and the weights round trip,
# built against the venv's torch (docs/runtime.md) in a target dir of its own so the flex
# artifacts are not rebuilt. Skipped only where no venv with torch exists.
venv="${SFTCTL_VENV:-/opt/sftctl-venv}"
if [ -x "$venv/bin/python" ]; then
  (
    export VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"
    export LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1
    export LD_LIBRARY_PATH="$("$venv/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/tch"
    cargo clippy -p sftctl-runtime --features tch --all-targets -- -D warnings
    # model_parity runs libtorch's fused attention and the decomposed path against transformers;
    # lean_grads the fused kernel against the decomposed path (GQA, packing, window, bf16).
    cargo test -p sftctl-runtime --features tch --test model_parity --test weights_io --test lean_grads
    # MMLU scoring against transformers with the fused kernel (no autodiff).
    cargo test -p sftctl-runtime --features tch --test eval_mmlu
    # The memory estimate with the fused kernel against resident memory (docs/gpu.md).
    cargo test -p sftctl-runtime --features tch --test memory_estimate
    # bf16 with fp32 master weights against fp32 on flex and tch-CPU (docs/gpu.md).
    cargo test -p sftctl-runtime --features tch --test mixed_precision
    # The GPU data-parallel path compiles (cudarc loads libcuda and NCCL only at run time).
    cargo build -p sftctl-runtime --features tch,nccl --lib
  )
elif [ -n "${SFTCTL_REQUIRE_PYTHON:-}" ]; then
  echo "SFTCTL_REQUIRE_PYTHON is set but $venv has no python" >&2
  exit 1
fi
