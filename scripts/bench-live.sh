#!/usr/bin/env bash
# bench-live.sh - live throughput of joypath (AF_XDP) against the kernel gateway baseline and a null
# AF_XDP reflector, on the three-host topology of ../shared/baselines (vtepA - gw - vtepB), with the
# baselines' own generator (bench.sh: trafgen on CPU0 in vtepA, delivered pps counted at vtepB).
# Prints each run's bench.sh line and the ratios joypath/kernel and joypath/null, measured in one run.
#
#   sudo scripts/bench-live.sh            # needs root, a release build, nftables netsniff-ng sysstat
#   Env: DUR=5 (s per run)  ROUNDS=1  JOYPATH=target/release/joypath  CORES=1 (worker core)  POLL=spin
#        BASELINES=../shared/baselines   (any bench.sh knob passes through: RING=1, SINK=full, ...)
# Uses the fixed namespace names vtepA/gw/vtepB of kernel-gw.sh (one benchmark at a time per machine)
# and only 198.18.0.0/15 addresses. Tears everything down on exit.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASELINES:-$HERE/../shared/baselines}
[ -x "$BASE/kernel-gw.sh" ] || BASE=$(readlink -f "$BASE"); [ -f "$BASE/kernel-gw.sh" ] || { echo "no kernel-gw.sh in $BASE" >&2; exit 2; }
JOYPATH=${JOYPATH:-${CARGO_TARGET_DIR:-$HERE/target}/release/joypath}
[ -x "$JOYPATH" ] || { echo "build first: cargo build --release (or set JOYPATH=)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
export DUR=${DUR:-5}
ROUNDS=${ROUNDS:-1}; CORES=${CORES:-1}; POLL=${POLL:-spin}
W=$(mktemp -d); export W
GWPID=""
cleanup() { [ -n "$GWPID" ] && kill -TERM "$GWPID" 2>/dev/null; sleep 0.5; bash "$BASE/kernel-gw.sh" down >/dev/null 2>&1; }
trap cleanup EXIT

pps() { sed -n 's/.*arrived(b0 rx) *\([0-9]*\) pps.*/\1/p' "$1" | tail -1; }

start_joy() {   # $1 = label, rest = extra args
  local l=$1; shift
  bash "$BASE/kernel-gw.sh" base >/dev/null || exit 1
  ip netns exec gw env JOYPATH_LOG=info "$JOYPATH" run --config "$HERE/examples/live.toml" \
     --interface ga,gb --cores "$CORES" --poll "$POLL" "$@" > "$W/$l.out" 2> "$W/$l.err" &
  GWPID=$!
  for _ in $(seq 100); do grep -q "joypath running" "$W/$l.err" && break; sleep 0.2; done
  grep -q "joypath running" "$W/$l.err" || { cat "$W/$l.err"; exit 1; }
  grep -E "attached|RX queue" "$W/$l.err" | sed 's/^.*INFO[^ ]* [^ ]* /   /' | head -3
}
stop_joy() { kill -TERM "$GWPID"; wait "$GWPID"; GWPID=""; sed 's/^/   /' "$W/$1.out"; }

declare -A SUM
for r in $(seq "$ROUNDS"); do
  echo "== round $r: kernel gateway (kernel-gw.sh up, bridged + nft)"
  bash "$BASE/kernel-gw.sh" up >/dev/null || exit 1
  bash "$BASE/bench.sh" kernel | tee "$W/kernel.$r"
  bash "$BASE/kernel-gw.sh" down >/dev/null

  echo "== round $r: joypath run (AF_XDP, full pipeline)"
  start_joy joypath
  bash "$BASE/bench.sh" joypath | tee "$W/joypath.$r"
  stop_joy joypath

  echo "== round $r: null AF_XDP reflector (joypath run --null: same driver, no pipeline)"
  start_joy null --null
  bash "$BASE/bench.sh" null | tee "$W/null.$r"
  stop_joy null
  bash "$BASE/kernel-gw.sh" down >/dev/null

  k=$(pps "$W/kernel.$r"); j=$(pps "$W/joypath.$r"); n=$(pps "$W/null.$r")
  awk -v k="${k:-0}" -v j="${j:-0}" -v n="${n:-0}" 'BEGIN{
    printf "round ratios: joypath/kernel %.2f   joypath/null %.2f   (delivered pps: joypath %d, kernel %d, null %d)\n",
      (k>0?j/k:0), (n>0?j/n:0), j, k, n }'
done
