#!/usr/bin/env bash
# A scripted management session with socat: start a gateway without a NIC (`replay --serve`), onboard a
# tenant end to end over the JSON-lines socket, watch its traffic change verdict, audit, roll back.
# Everything in a temporary directory; addresses only in 198.18.0.0/15.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v socat >/dev/null || scripts/install-deps.sh
[ -x target/release/joypath ] || cargo build --release --quiet
JP=$PWD/target/release/joypath
T=$(mktemp -d)
trap 'kill $GW 2>/dev/null; wait $GW 2>/dev/null; rm -rf "$T"' EXIT
SOCK=$T/joypath.sock

$JP replay --serve --pps 2000 --config pcap-fixtures/fixtures.toml --socket "$SOCK" --state-dir "$T/state" \
  pcap-fixtures/verdicts.pcap >/dev/null 2>"$T/gw.log" &
GW=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done

n=0
req() { # req OP ARGS-JSON: one request line in, one response line out
  n=$((n + 1))
  local args=${2:-'{}'} line
  line=$(printf '{"id":%s,"op":"%s","args":%s}' "$n" "$1" "$args" | tr -d '\n')
  echo ">>> $line"
  echo "$line" | socat -t 5 - UNIX-CONNECT:"$SOCK" | tee "$T/last"
  echo
}
field() { python3 -c "import json,sys; d=json.load(open('$T/last')); print(eval('d' + sys.argv[1]))" "$1"; }

req status
V=$(field '["result"]["version"]')

echo "### onboard tenant 'newco' (id 700) with its segment, two endpoints and a rule to acme, as one version"
req policy.edit "{\"expected_version\": $V, \"comment\": \"onboard newco\", \"edits\": [
  {\"op\": \"tenant.add\",   \"args\": {\"tenant\": {\"name\": \"newco\", \"id\": 700, \"vteps\": [\"198.18.0.7\"]}}},
  {\"op\": \"segment.add\",  \"args\": {\"segment\": {\"vni\": 6000, \"identity\": \"vni\", \"tenant\": \"newco\"}}},
  {\"op\": \"endpoint.add\", \"args\": {\"endpoint\": {\"tenant\": \"newco\", \"ip\": \"198.19.60.1\", \"mac\": \"02:00:00:00:60:01\", \"vtep\": \"198.18.0.7\", \"vni\": 6000}}},
  {\"op\": \"endpoint.add\", \"args\": {\"endpoint\": {\"tenant\": \"newco\", \"ip\": \"198.19.60.2\", \"mac\": \"02:00:00:00:60:02\", \"vtep\": \"198.18.0.7\", \"vni\": 6000}}},
  {\"op\": \"rule.add\",     \"args\": {\"rule\": {\"from\": \"newco\", \"to\": \"acme\", \"proto\": \"tcp\", \"ports\": \"443\", \"action\": \"allow\", \"priority\": 100}}}
]}"
[ "$(field '["ok"]')" = True ] || { echo "onboarding failed" >&2; exit 1; }
NEW=$(field '["result"]["version"]')

echo "### a second admin working from the old version is refused, not silently overwritten"
req tenant.add "{\"expected_version\": $V, \"tenant\": {\"name\": \"stale\", \"id\": 61}}"
[ "$(field '["error"]["code"]')" = version_conflict ]

echo "### every worker runs the new version"
for _ in $(seq 50); do
  req audit.verify >/dev/null
  [ "$(field '["result"]["ok"]')" = True ] && break
  sleep 0.1
done
req audit.verify

echo "### who may newco reach now?"
req audit.reachability '{"at": "2026-06-01T00:00:00Z"}' >/dev/null
python3 - "$T/last" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["result"]["reach"]:
    if "newco" in (r["from"], r["to"]):
        print("   ", r["from"], "->", r["to"], r["proto"], r.get("ports", ""), "rule", r["rule"])
PY

req history '{"limit": 3}'
echo "### roll back to version $V (a new version), and the store says so"
req rollback "{\"version\": $V}"
req policy.get >/dev/null
python3 -c "import json; d=json.load(open('$T/last'))['result']; print('    now version', d['version'], '(', d['meta']['comment'], '); newco present:', any(t['name']=='newco' for t in d['document']['tenant']))"
req stats '{"format": "prometheus"}' >/dev/null
python3 -c "import json; print(''.join(l + '\n' for l in json.load(open('$T/last'))['result']['text'].splitlines() if 'policy_version' in l and not l.startswith('#')))"
echo "onboarding session done"
