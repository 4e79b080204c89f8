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
echo "== all tests passed"
