#!/usr/bin/env bash
# Forward+backward time per token of the runtime's model on flex and tch-CPU next to PyTorch
# eager, same config, batch and thread count. Runs the three in turn ROUNDS times (interleaved,
# so machine load hits all alike) and prints one JSON line per run. See docs/benchmarks.md.
#
# Usage: bench/model_bench.sh [THREADS] [ROUNDS] -- extra args (--layers/--hidden/--batch/--seq/--iters)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"; ROUNDS="${2:-2}"; shift $(( $# > 2 ? 3 : $# ))
VENV="${SFTCTL_VENV:-/opt/sftctl-venv}"
TORCH_LIB="$VENV/lib/python3.11/site-packages/torch/lib"
FLEX_BIN="${FLEX_TARGET:-/work/tgt/rt}/debug/examples/model_fwd_bwd"
TCH_BIN="${TCH_TARGET:-/work/tgt/rt-tch}/debug/examples/model_fwd_bwd"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
for _ in $(seq "$ROUNDS"); do
  "$FLEX_BIN" --backend flex "$@"
  LD_LIBRARY_PATH="$TORCH_LIB" "$TCH_BIN" --backend tch-cpu "$@"
  "$VENV/bin/python" bench/model_fwd_bwd_torch.py --threads "$THREADS" "$@"
done
