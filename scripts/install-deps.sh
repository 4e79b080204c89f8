#!/usr/bin/env bash
# Installs what Egress's local run and tests need on Debian 12, and nothing that is already there:
# ClickHouse (server and client), the real exporters and peers (softflowd, pmacct, nfdump),
# tshark, Alertmanager. Runs as root (or with sudo available).
set -euo pipefail

packages=(clickhouse-server clickhouse-client softflowd pmacct nfdump tshark tcpdump prometheus-alertmanager openssl curl python3-venv chromium
  g++ xxd) # g++ and xxd: cargo-fuzz (libFuzzer is C++) and its seed script
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo (Rust) is required: https://rustup.rs" >&2
  exit 1
fi
