#!/usr/bin/env bash
# Fuzzes every decoder, the capture reader and the config parser (fuzz/fuzz_targets/) for a
# short time each; fails when a target finds a crash (panic, OOM, timeout), leaving the input in
# fuzz/artifacts/<target>/. CI runs it from scripts/test.sh with the default 20 s per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# libFuzzer needs nightly compiler flags: on a stable toolchain RUSTC_BOOTSTRAP=1 lets rustc
# accept them. Built without a sanitizer (-s none: the workspace denies unsafe code, so ASan would
# find nothing a panic does not, at half the speed) but with debug assertions and overflow checks
# (-a), so that an arithmetic overflow on input is a finding too.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(netflow_v5 netflow_v9 ipfix sflow pcap config)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
flags=(-s none -a)

echo "== fuzz: seeding corpora"
fuzz/seed.sh
echo "== fuzz: building targets"
cargo fuzz build "${flags[@]}"

logs="${TMPDIR:-/tmp}/egress-fuzz"
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
  log="$logs/$target.log"
  status=0
  cargo fuzz run "${flags[@]}" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    > "$log" 2>&1 || status=$?
  executions=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  coverage=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)
  echo "fuzz $target: ${seconds}s, $executions executions ($rate/s), ${coverage:-no coverage line}"
  if [ "$status" -ne 0 ]; then
    echo "fuzz $target FAILED (exit $status); log: $log" >&2
    grep -E -A25 '^==[0-9]+== ERROR|panicked at|^SUMMARY|Test unit written' "$log" | head -60 >&2 || tail -40 "$log" >&2
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crash in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "== fuzz: no crash"
