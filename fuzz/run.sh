#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed budget (seconds each, default 60), outside CI.
# Only the stable toolchain is installed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly
# flags. No sanitizer (the code is safe Rust; debug assertions catch overflows); libFuzzer's
# RSS limit turns an allocation driven by a forged length into a reported crash. A crash
# leaves its input in artifacts/<target>/: copy it into the crate's
# tests/fuzz_regressions/<target>/ and fix the bug (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")"
budget="${1:-60}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sftctl-fuzz-target}"
flags=(-s none -O --debug-assertions)
cargo fuzz build "${flags[@]}"
for t in ${TARGETS:-spec ledger_records data_jsonl token_cache tokenizer_config model_config safetensors tokenizer_json}; do
  mkdir -p "corpus/$t"
  echo "=== $t (${budget}s)"
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$budget" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|.*panicked|SUMMARY|Done)' || true
done
if compgen -G "artifacts/*/*" >/dev/null; then
  echo "crashes found:"; ls artifacts/*/*
  exit 1
fi
