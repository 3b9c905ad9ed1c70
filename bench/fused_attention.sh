#!/bin/bash
# libtorch's fused attention against the decomposed path, and against PyTorch, on tch-CPU
# (docs/benchmarks.md, "Fused attention"): the runtime's optimizer step (bench/gpu_step.rs) on the
# tiny Llama (2 layers, hidden 64, 4 query / 2 kv heads, 106,816 parameters) with one row of SEQ
# tokens, fused and decomposed, fp32 and bf16, then the plain PyTorch loop on the same model
# (bench/gpu/torch_ceiling_and_loop.py --tiny: transformers, SDPA, bf16, torch AdamW). ROUNDS
# rounds interleaved; each line: one JSON measurement plus the process's peak resident memory.
#
# Usage: bench/fused_attention.sh [ROUNDS=3] [SEQ...=1024 4096]
set -euo pipefail
rounds=${1:-3}
shift || true
seqs=${*:-1024 4096}
cd "$(dirname "$0")/.."
venv=${SFTCTL_VENV:-/opt/sftctl-venv}
target=${CARGO_TARGET_DIR:-target}
torch_lib=$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 PATH="$venv/bin:$PATH" \
  CARGO_TARGET_DIR="$target/tch" cargo build -q --release -p sftctl-runtime --features tch --example gpu_step
export OMP_NUM_THREADS=1 LD_LIBRARY_PATH="$torch_lib"
step="$target/tch/release/examples/gpu_step"
measure() { # label, command...
  local label=$1; shift
  local out rss tmp
  tmp=$(mktemp)
  out=$(/usr/bin/time -o "$tmp" -f "%M" "$@" 2>/dev/null)
  rss=$(cat "$tmp"); rm -f "$tmp"
  echo "{\"label\":\"$label\",\"maxrss_kb\":$rss,\"result\":$(grep '^{' <<<"$out" | tail -1)}"
}
for _ in $(seq "$rounds"); do
  for seq in $seqs; do
    measure "sftctl fp32 fused seq=$seq" "$step" --backend tch-cpu --tiny --seq "$seq" --steps 3
    measure "sftctl fp32 decomposed seq=$seq" "$step" --backend tch-cpu --tiny --seq "$seq" --steps 3 --plain-attention
    measure "sftctl bf16 fused seq=$seq" "$step" --backend tch-cpu --tiny --seq "$seq" --steps 3 --bf16
    measure "pytorch bf16 sdpa seq=$seq" "$venv/bin/python" bench/gpu/torch_ceiling_and_loop.py --tiny --seq "$seq" --micro 1 --steps 3 --warmup 1
  done
done
