#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets in fuzz/ and runs each for a short while.
# Fails (non-zero exit) when a target crashes, or when a target cannot be built or run.
#
#   scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh pipeline frame_parser
#
# Needs only stable Rust: cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov…), which
# stable rustc accepts with RUSTC_BOOTSTRAP=1. libfuzzer-sys compiles libFuzzer with a C++ compiler, so
# a fresh Debian machine needs `build-essential` (g++); nothing else (coreutils only for the seeds).
# Environment: FUZZ_SECONDS (per target), FUZZ_JOBS (libFuzzer -fork workers, default 1),
# CARGO_TARGET_DIR (default fuzz/target), FUZZ_SANITIZER (default address; "none" is faster).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

all_targets=(frame_parser pipeline config_toml config_fast config_json capture)
if (($# > 0)); then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz-smoke: no C++ compiler (libfuzzer-sys builds libFuzzer): apt-get install -y build-essential" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# --- seed corpora (fuzz/corpus is git-ignored; libFuzzer adds what it finds there) -------------------
corpus="$root/fuzz/corpus"
mkdir -p "$corpus"/{frame_parser,pipeline,config_toml,config_fast,config_json,capture}

u32le() { od -An -tu4 --endian=little -j "$2" -N4 "$1" | tr -d ' \n'; }
# Copies LEN bytes at OFFSET of FILE to OUT.
bytes_at() { dd if="$1" of="$4" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=65536 status=none; }

# Writes every frame of a little-endian pcap or pcapng file to DIR/PREFIX-N.
extract_frames() {
    local f=$1 dir=$2 prefix=$3 size magic off incl bt bl n=0
    size=$(stat -c %s "$f")
    magic=$(od -An -tx1 -N4 "$f" | tr -d ' \n')
    case $magic in
    d4c3b2a1 | 4d3cb2a1)
        off=24
        while ((off + 16 <= size)); do
            incl=$(u32le "$f" $((off + 8)))
            off=$((off + 16))
            ((off + incl <= size)) || break
            bytes_at "$f" "$off" "$incl" "$dir/$prefix-$n"
            n=$((n + 1))
            off=$((off + incl))
        done
        ;;
    0a0d0d0a)
        off=0
        while ((off + 12 <= size)); do
            bt=$(u32le "$f" "$off")
            bl=$(u32le "$f" $((off + 4)))
            ((bl >= 12 && off + bl <= size)) || break
            if ((bt == 6)); then
                incl=$(u32le "$f" $((off + 20)))
                bytes_at "$f" $((off + 28)) "$incl" "$dir/$prefix-$n"
                n=$((n + 1))
            fi
            off=$((off + bl))
        done
        ;;
    esac
}

seed_stamp="$corpus/.seeded"
if [[ ! -e $seed_stamp || -n $(find pcap-fixtures examples -newer "$seed_stamp" -print -quit 2>/dev/null) ]]; then
    for f in pcap-fixtures/*.pcap pcap-fixtures/*.pcapng; do
        [[ -e $f ]] || continue
        name=$(basename "$f")
        extract_frames "$f" "$corpus/frame_parser" "$name"
        extract_frames "$f" "$corpus/pipeline" "$name"
        cp "$f" "$corpus/capture/"
    done
    for f in pcap-fixtures/*.toml examples/*.toml; do
        [[ -e $f ]] || continue
        cp "$f" "$corpus/config_toml/$(echo "$f" | tr / _)"
        cp "$f" "$corpus/config_fast/$(echo "$f" | tr / _)"
    done
    cat >"$corpus/config_json/seed.json" <<'EOF'
{"gateway":{"underlay_ip":"198.18.0.254","underlay_ip6":"2001:2::fe","udp_port":4789,"mtu":1500},
 "segment":[{"vni":100,"identity":"vni","tenant":"acme"},{"vni":1,"identity":"gbp"},{"vni":2,"identity":"vlan"}],
 "tenant":[{"name":"acme","id":10,"vteps":["198.18.0.1"]},{"name":"globex","id":20,"address_space":"g"}],
 "endpoint":[{"tenant":"acme","ip":"198.19.0.1","mac":"02:00:00:00:0a:01","vtep":"198.18.0.1","vni":100},
             {"tenant":"globex","ip":"2001:2:0:4::1","mac":"02:00:00:00:14:21","vtep":"2001:2::2","vni":1}],
 "rule":[{"from":"acme","to":"globex","proto":"tcp","ports":"8000-8080","from_cidr":"198.19.0.0/16",
          "action":"allow","priority":10,"not_before":"2026-01-01T00:00:00Z","not_after":"2026-12-31T00:00:00Z"},
         {"from":"*","to":"*","proto":"udp","to_cidr":"2001:2::/48","action":"deny"}]}
EOF
    # RFC 3339 offsets, valid and not (a multi-byte character where a digit or ':' belongs once
    # panicked the parser): every validity window goes through it.
    for o in "+01:00" "-23:59" "+€00" "+00:€" "+0€0" "Z"; do
        printf '[gateway]\nunderlay_ip = "198.18.0.254"\n[[tenant]]\nname = "a"\nid = 1\n[[rule]]\nfrom = "a"\nto = "*"\naction = "allow"\nnot_before = "2026-01-01T00:00:00%s"\nnot_after = "2026-12-31T00:00:00.5%s"\n' "$o" "$o" \
            >"$corpus/config_toml/rfc3339$(echo "$o" | od -An -tx1 | tr -d ' \n').toml"
        printf '{"gateway":{"underlay_ip":"198.18.0.254"},"tenant":[{"name":"a","id":1}],"rule":[{"from":"a","to":"*","action":"deny","not_before":"2026-01-01T00:00:00%s"}]}\n' "$o" \
            >"$corpus/config_json/rfc3339$(echo "$o" | od -An -tx1 | tr -d ' \n').json"
    done
    touch "$seed_stamp"
fi

# --- build once, then run each target ------------------------------------------------------------
cd "$root/fuzz"
echo "fuzz-smoke: building the targets (sanitizer: $sanitizer)" >&2
cargo fuzz build -s "$sanitizer"

failed=()
for t in "${targets[@]}"; do
    echo "fuzz-smoke: $t for ${seconds}s" >&2
    log=$(mktemp)
    start=$(date +%s)
    if cargo fuzz run -s "$sanitizer" "$t" "$corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=65536 \
        ${FUZZ_JOBS:+-fork="$FUZZ_JOBS"} >"$log" 2>&1; then
        runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
        echo "fuzz-smoke: $t ok ($runs runs, $(($(date +%s) - start))s)" >&2
    else
        echo "fuzz-smoke: $t FAILED; its log:" >&2
        tail -n 60 "$log" >&2
        failed+=("$t")
    fi
    rm -f "$log"
done

if ((${#failed[@]} > 0)); then
    echo "fuzz-smoke: crashes in: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} passed, 0 failed"
