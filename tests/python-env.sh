#!/usr/bin/env bash
# Creates (or checks) the Python environment the tests use: torch 2.11.0 (the libtorch that the
# tch backend links, the same build the GPU machines have), transformers for parity checks, and
# lm-evaluation-harness (run as an evaluation job by tests/tests/e2e_evals.rs; it also
# regenerates runtime/tests/fixtures/eval_lm_eval.json).
set -euo pipefail
venv="${1:-${SFTCTL_VENV:-/opt/sftctl-venv}}"
want_torch=2.11.0
want_lm_eval=0.4.13
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$want_torch" <<'PY' 2>/dev/null; }
import sys, torch, transformers, numpy, pandas, safetensors
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "torch==$want_torch" transformers numpy pandas safetensors
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('lm_eval') != '$want_lm_eval')" 2>/dev/null; then
  "$venv/bin/pip" install -q "lm-eval[hf]==$want_lm_eval"
fi
echo "python env $venv ok"
