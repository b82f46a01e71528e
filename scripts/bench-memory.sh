#!/usr/bin/env bash
# bench-memory.sh - peak memory at a million tenants (issue 7's "joypath replay peak RSS <= 1 GiB"):
# generates the 1M synth workload once (a VNI segment per tenant, 1M endpoints, 1M rules, ~400 MB of
# TOML), then prints the peak RSS and wall time of `joypath replay --json` and of `joypath replay`
# (the text report), each against 1 GiB (1 048 576 kB), and of `joypath check` (no target of its own);
# then, on a `joypath replay --serve` of the same policy, the gateway's peak RSS and the time of one
# `GET /metrics` and of one `stats` (every tenant, the defaults), each after a fresh start.
#
#   scripts/bench-memory.sh        # needs a release build (cargo build --release) and ~500 MB in $DIR
#   Env: DIR=/tmp/jp1m (kept between runs)  JOYPATH=target/release/joypath  ROUNDS=1
# Peak RSS moves by tens of MB between machines for the same code: compare builds in one run
# (JOYPATH=... of each), not against another machine's figure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
JOYPATH=${JOYPATH:-${CARGO_TARGET_DIR:-$HERE/target}/release/joypath}
DIR=${DIR:-/tmp/jp1m}
ROUNDS=${ROUNDS:-1}
[ -x "$JOYPATH" ] || { echo "build first: cargo build --release (or set JOYPATH=)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [ ! -s "$DIR/synth.toml" ] || [ ! -s "$DIR/synth.pcap" ]; then
  "$JOYPATH" synth --tenants 1000000 --endpoints 1000000 --rules 1000000 --flows 100000 \
    --frames 100000 --out "$DIR"
fi
LIMIT=1048576
out=$(mktemp)
serve=$(mktemp -d)
trap 'rm -rf "$out" "$serve"' EXIT
measure() {   # $1 = label, $2 = target (1: against 1 GiB), rest = the command
  local label=$1 target=$2; shift 2
  /usr/bin/time -f "%M %e" -o "$out" "$@" >/dev/null
  read -r kb secs <"$out"
  local note="no target of its own"
  if [ "$target" = 1 ]; then
    note="under 1 GiB by $(( LIMIT - kb )) kB"
    [ "$kb" -le "$LIMIT" ] || note="OVER 1 GiB by $(( kb - LIMIT )) kB"
  fi
  printf '%-22s %9s kB peak RSS  %6s s  (%s)\n' "$label" "$kb" "$secs" "$note"
}
for _ in $(seq "$ROUNDS"); do
  measure "replay --json" 1 "$JOYPATH" replay --config "$DIR/synth.toml" --json "$DIR/synth.pcap"
  measure "replay (text report)" 1 "$JOYPATH" replay --config "$DIR/synth.toml" "$DIR/synth.pcap"
  measure "check" 0 "$JOYPATH" check --config "$DIR/synth.toml"
done

# A gateway serving the 1M policy (no NIC: it loops over the capture), asked once; its peak RSS.
served() {   # $1 = label, $2 = "metrics" or "stats"
  local port=$(( 20000 + RANDOM % 10000 ))
  rm -rf "${serve:?}"/*
  "$JOYPATH" replay --config "$DIR/synth.toml" "$DIR/synth.pcap" --serve --socket "$serve/sock" \
    --state-dir "$serve/state" --metrics-listen "127.0.0.1:$port" >"$serve/log" 2>&1 &
  local pid=$! i
  for i in $(seq 300); do [ -S "$serve/sock" ] && break; sleep 0.5; done
  sleep 2
  local before t0 t1 bytes
  before=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  t0=$(date +%s%N)
  if [ "$2" = metrics ]; then
    bytes=$(curl -sf "http://127.0.0.1:$port/metrics" | wc -c)
  else
    bytes=$("$JOYPATH" ctl --socket "$serve/sock" stats --json | wc -c)
  fi
  t1=$(date +%s%N)
  local kb
  kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-22s %9s kB peak RSS  %6.2f s  (%s bytes; %s kB before it)\n' "$1" "$kb" \
    "$(echo "($t1 - $t0) / 1000000000" | bc -l)" "$bytes" "$before"
}
if command -v curl >/dev/null; then
  for _ in $(seq "$ROUNDS"); do
    served "serve: GET /metrics" metrics
    served "serve: stats" stats
  done
fi
