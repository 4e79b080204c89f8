#!/usr/bin/env bash
# Builds the fuzz targets' seed corpora in fuzz/corpus/<target>/ from the reference captures
# (../shared/fixtures/captures beside the checkout, or $EGRESS_CAPTURES) and the shipped configs.
#
# Decoder targets (netflow_v5, netflow_v9, ipfix, sflow), chosen by the capture's folder:
#   - one seed per capture: all its UDP payloads in file order joined by the separator "EGRS"
#     (egress_fuzz::DATAGRAM_SEPARATOR), so templates come before the data that needs them;
#   - one seed per distinct UDP payload, alone.
# pcap target: every capture file as it is. config target: every *.toml under deploy/.
# The corpora are derived from third-party captures and are never committed (.gitignore).
# Seeds are named by content hash, so running this again adds nothing twice.
set -euo pipefail
cd "$(dirname "$0")"
captures="${EGRESS_CAPTURES:-../../shared/fixtures/captures}"
[ -d "$captures" ] || { echo "seed.sh: no captures at $captures" >&2; exit 1; }
command -v tshark >/dev/null || { echo "seed.sh: tshark is needed (apt-get install tshark)" >&2; exit 1; }

mkdir -p corpus/{netflow_v5,netflow_v9,ipfix,sflow,pcap,config}

# Writes stdin to corpus/$1/<sha1 of the content>.
put() {
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if [ -s "$tmp" ]; then
    mv "$tmp" "corpus/$1/$(sha1sum "$tmp" | cut -c1-40)"
  else
    rm -f "$tmp"
  fi
}

for folder in netflow-v5:netflow_v5 netflow-v9:netflow_v9 ipfix:ipfix sflow-v5:sflow; do
  dir="$captures/${folder%%:*}" target="${folder#*:}"
  for capture in "$dir"/*; do
    put pcap < "$capture"
    # One hex payload per line, whatever the port.
    payloads=$(tshark -n -r "$capture" -T fields -e udp.payload -Y udp 2>/dev/null | grep -v '^$' || true)
    [ -n "$payloads" ] || continue
    while read -r hex; do
      xxd -r -p <<< "$hex" | put "$target"
    done <<< "$payloads"
    { first=1
      while read -r hex; do
        [ "$first" = 1 ] || printf 'EGRS'
        first=0
        xxd -r -p <<< "$hex"
      done <<< "$payloads"; } | put "$target"
  done
done

for config in $(find ../deploy -name '*.toml'); do
  put config < "$config"
done

for target in netflow_v5 netflow_v9 ipfix sflow pcap config; do
  echo "seed.sh: corpus/$target: $(find "corpus/$target" -type f | wc -l) files"
done
