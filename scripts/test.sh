#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit and integration tests (real
# ClickHouse 18.16, real exporters), and the schema and queries on current ClickHouse (chdb).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/egress-cargo-test.log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "cargo test failed" >&2; exit "$status"; }
if [ -x tests/chdb/run.sh ]; then
  echo "== current ClickHouse (chdb)"
  tests/chdb/run.sh
fi
if [ -x scripts/fuzz.sh ]; then
  echo "== fuzz (20 s per target)"
  scripts/fuzz.sh 20
fi
passed=$(grep -Eo 'test result: [a-z]+\. [0-9]+ passed' "${TMPDIR:-/tmp}/egress-cargo-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "${TMPDIR:-/tmp}/egress-cargo-test.log" | awk '{s+=$1} END {print s+0}')
echo "== all tests passed"
echo "cargo: $passed passed, $failed failed"
