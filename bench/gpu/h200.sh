#!/bin/bash
# The prepared device check of issue 9 (docs/gpu.md): one call on the lent H200, < 8 minutes.
# Runs from the repository root on the device machine; writes JSON lines to $OUT/gpu.jsonl.
# Needs: the stripped release binaries built here (see docs/gpu.md) carried in target-gpu/.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TORCH_LIB=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  ldd --version | head -1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} > "$OUT/env.txt" 2>&1
# 1. The environment checks the job runs first.
timeout 30 target-gpu/sftctl-train doctor --backend cuda:0 > "$OUT/doctor.txt" 2>&1; echo "doctor rc=$?" >> "$OUT/doctor.txt"
# 2. Plain PyTorch loop and the bf16 matmul ceiling, same call (Llama-3.2-3B shapes, bf16).
timeout 240 python3 bench/gpu/torch_ceiling_and_loop.py --seq 4096 --micro 2 --steps 10 >> "$OUT/gpu.jsonl" 2> "$OUT/torch.err"
# 3. sftctl's trainer at the same shapes (fp32 today; bf16 once issue 9's mixed precision lands).
timeout 240 target-gpu/train_step --backend cuda:0 --layers 28 --hidden 3072 --micro 2 --seq 4096 --accum 1 --steps 5 >> "$OUT/gpu.jsonl" 2> "$OUT/sftctl.err"
echo done
