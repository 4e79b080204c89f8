#!/bin/sh
# Writes the benchmark's export streams to bench/streams (or $1): a generated traffic pcap is
# read by softflowd (IPFIX, NetFlow v9, v5) and by pmacctd's sfprobe (sFlow v5); a UDP tee on
# loopback records what each exporter sends, and each stream is written as a pcap of export
# datagrams. Needs softflowd and pmacct installed; no root.
set -eu
cd "$(dirname "$0")/.."
out="${1:-bench/streams}"
cargo run --quiet --release -p egress-bench -- streams --out "$out"
