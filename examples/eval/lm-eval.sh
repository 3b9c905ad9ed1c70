#!/bin/bash
# lm-evaluation-harness itself on one checkpoint, offline, over examples/eval/mmlu-tiny as local
# MMLU-format tasks: what a `kind = "command"` evaluation runs (examples/quickstart-lm-eval.toml).
# Usage: lm-eval.sh MODEL_DIR OUTPUT_PATH
# Needs `lm_eval` (pip install "lm-eval[hf]"; `bash tests/python-env.sh` installs it) in the
# venv the spec's [env] activates.
set -euo pipefail
model=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
tasks=$(mktemp -d)
trap 'rm -rf "$tasks"' EXIT
names=$(python3 "$here/lm_eval_tasks.py" "$here/mmlu-tiny" "$tasks")
HF_HOME="$tasks/hf" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  lm_eval --model hf --model_args "pretrained=$model,dtype=float32" --tasks "$names" \
  --include_path "$tasks" --device cpu --batch_size 1 --output_path "$out"
