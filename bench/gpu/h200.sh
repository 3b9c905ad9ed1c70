#!/bin/bash
# The prepared device check of issue 9 (docs/gpu.md): one call on the lent H200, about 8 minutes.
# Runs from the repository root on the device machine; writes into $OUT: env.txt, doctor.txt,
# gpu.jsonl (one JSON line per measurement), mem-*.csv (device memory sampled every 200 ms).
# Needs the stripped release binaries built here, carried in target-gpu/ (docs/gpu.md).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TORCH_LIB=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ ldd --version | head -1; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } > "$OUT/env.txt" 2>&1
sample() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/mem-$1.csv" & echo $!; }
# 1. The environment checks the job runs first.
timeout 30 target-gpu/sftctl-train doctor --backend cuda:0 > "$OUT/doctor.txt" 2>&1; echo "doctor rc=$?" >> "$OUT/doctor.txt"
# 2. bf16 matmul ceiling + plain PyTorch loop (transformers, Llama-3.2-3B shapes, bf16, AdamW), 1 x 4096 tokens.
P=$(sample torch); timeout 200 python3 bench/gpu/torch_ceiling_and_loop.py --seq 4096 --micro 1 --steps 10 >> "$OUT/gpu.jsonl" 2> "$OUT/torch.err"; kill $P
# 3. sftctl's trainer, same shapes, tokens and precision (bf16, fp32 master weights and moments),
#    libtorch's fused attention (its kernel choice is logged to sftctl.err), lean options on.
P=$(sample sftctl); timeout 240 target-gpu/gpu_step --backend cuda:0 --seq 4096 --steps 4 --bf16 --ce-chunk 1024 --checkpoint >> "$OUT/gpu.jsonl" 2> "$OUT/sftctl.err"; kill $P
echo done
