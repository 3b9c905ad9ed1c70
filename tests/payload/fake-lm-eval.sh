#!/bin/bash
# A stand-in for lm-evaluation-harness in evaluation-job tests: `fake-lm-eval.sh MODEL_DIR OUTPUT`
# checks that MODEL_DIR holds a Hugging Face model and writes an lm-eval-shaped results JSON
# (a group task with one subtask) to OUTPUT. Fails while `fail-lm-eval` exists beside it.
set -euo pipefail
model=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
if [ -e "$here/fail-lm-eval" ]; then
  echo "fake-lm-eval: failing on purpose" >&2
  exit 4
fi
[ -s "$model/model.safetensors" ] && [ -s "$model/config.json" ] || { echo "fake-lm-eval: no model in $model" >&2; exit 5; }
# A score that depends on the weights, so different checkpoints score differently.
n=$(( 0x$(sha256sum "$model/model.safetensors" | cut -c1-4) % 1000 ))
cat > "$out" <<JSON
{"results": {"fake_group": {"acc,none": 0.$n, "acc_stderr,none": 0.01, "alias": "fake_group"},
             "fake_sub": {"acc,none": 0.5, "alias": " - fake_sub"}},
 "group_subtasks": {"fake_group": ["fake_sub"]},
 "config": {"model": "hf", "model_args": "pretrained=$model"}}
JSON
echo "fake-lm-eval: scored $model"
