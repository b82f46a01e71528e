#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/property/golden/real-world/live tests, fixture
# reproducibility and a fuzz smoke run. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --release --quiet
echo "== fixtures are reproducible from scripts/mkfixtures.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 scripts/mkfixtures.py "$tmp" >/dev/null
for f in "$tmp"/*; do
  cmp "$f" "pcap-fixtures/$(basename "$f")" || { echo "pcap-fixtures/$(basename "$f") differs from a fresh run of scripts/mkfixtures.py" >&2; exit 1; }
done
echo "== the .deb: contents, conffiles, man pages, completions, systemd-analyze verify"
scripts/test-package.sh
echo "== scripted management session (socat)"
scripts/onboard.sh >/dev/null
if [ -x scripts/fuzz-smoke.sh ]; then
  echo "== fuzz smoke"
  FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz-smoke.sh
fi
echo "== all tests passed"
