#!/usr/bin/env bash
# Creates (or checks) the Python environment the tests use: torch 2.11.0 (the libtorch that the
# tch backend links, the same build the GPU machines have) and transformers for parity checks.
set -euo pipefail
venv="${1:-${SFTCTL_VENV:-/opt/sftctl-venv}}"
want_torch=2.11.0
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$want_torch" <<'PY' 2>/dev/null
import sys, torch, transformers, numpy, pandas, safetensors
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
then
  echo "python env $venv ok"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "torch==$want_torch" transformers numpy pandas safetensors
# lm-evaluation-harness regenerates runtime/tests/fixtures/eval_lm_eval.json (committed, so tests
# do not need it); opt in to keep CI small.
if [ -n "${SFTCTL_WITH_LM_EVAL:-}" ]; then "$venv/bin/pip" install -q "lm-eval[hf]"; fi
