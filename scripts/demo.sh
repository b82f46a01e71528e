#!/usr/bin/env bash
# The demo: builds joypath and replays the shipped fixtures through the real pipeline, showing what
# happened to each tenant's traffic, then the reachability audit of the fixtures' policy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet
JP=target/release/joypath
CFG=pcap-fixtures/fixtures.toml
mkdir -p target/demo
for cap in pcap-fixtures/{identity,verdicts,drops,arp,overlap}.pcap pcap-fixtures/ipv6.pcapng; do
  name=$(basename "${cap%.*}")
  echo "================ $cap ================"
  $JP replay --config "$CFG" --output "target/demo/$name.out.pcap" "$cap"
  echo
done
echo "================ verdicts.pcap frame by frame: tenant, outcome, deciding rule (first 30) ================"
$JP replay --config "$CFG" --frames pcap-fixtures/verdicts.pcap | head -30
echo
echo "================ who may reach whom (audit at 2026-06-01) ================"
$JP audit --config "$CFG" --at 2026-06-01T00:00:00Z | head -60
