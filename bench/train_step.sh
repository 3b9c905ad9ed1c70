#!/bin/bash
# Training-step throughput side by side in one run (docs/benchmarks.md, "Training step"):
# sftctl-train's step on flex and on tch-CPU (libtorch from the torch venv) and the plain PyTorch
# loop, same tiny-architecture Llama, batch and thread count, ROUNDS rounds interleaved so that
# load on a shared machine hits all three alike. Prints one JSON line per measurement.
#
# Usage: bench/train_step.sh [ROUNDS=3] [THREADS=1]
set -euo pipefail
rounds=${1:-3}
threads=${2:-1}
cd "$(dirname "$0")/.."
venv=${SFTCTL_VENV:-/opt/sftctl-venv}
target=${CARGO_TARGET_DIR:-target}
torch_lib=$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
cargo build -q -p sftctl-runtime --example train_step
LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 PATH="$venv/bin:$PATH" \
  CARGO_TARGET_DIR="$target/tch" cargo build -q -p sftctl-runtime --features tch --example train_step
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
for _ in $(seq "$rounds"); do
  "$target/debug/examples/train_step" --backend flex --steps 5
  LD_LIBRARY_PATH="$torch_lib" "$target/tch/debug/examples/train_step" --backend tch-cpu --steps 5
  "$venv/bin/python" bench/train_step_torch.py --threads "$threads" --steps 5
done
