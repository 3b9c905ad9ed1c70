#!/usr/bin/env bash
# `sftctl report` against pandas reading the same ledger files into a grouped table.
# usage: bench/report_bench.sh [RUNS] [STEPS]   (defaults 1000 × 10000; the ledger is kept in
# $BENCH_DIR, default /var/tmp/sftctl-report-bench-RUNSxSTEPS, and reused)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-1000}"
STEPS="${2:-10000}"
DIR="${BENCH_DIR:-/var/tmp/sftctl-report-bench-${RUNS}x${STEPS}}"
PY="${SFTCTL_VENV:-/opt/sftctl-venv}/bin/python"
cargo build -q --release -p sftctl --bin sftctl --example report_ledger
BIN="${CARGO_TARGET_DIR:-target}/release"
if [ ! -f "$DIR/sweeps/bench/sweep.json" ]; then
  rm -rf "$DIR"
  /usr/bin/time -f "generate: %e s" "$BIN/examples/report_ledger" "$DIR" "$RUNS" "$STEPS"
fi
du -sh "$DIR"
t() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
sync
a=$(t "$BIN/sftctl" report bench --ledger "$DIR" --rows batch_size,lr --format csv)
b=$(t "$BIN/sftctl" report bench --ledger "$DIR" --early 4096 --metrics mmlu)
c=$(t "$PY" bench/report_pandas.py "$DIR/sweeps/bench" 4096)
echo "runs=$RUNS steps=$STEPS cores=$(nproc)"
echo "sftctl report (table):  ${a} s"
echo "sftctl report --early:  ${b} s"
echo "pandas grouped table:   ${c} s"
echo "ratio pandas / sftctl table: $(echo "scale=1; $c / $a" | bc)"
