#!/usr/bin/env bash
# Installs everything joypath's build, tests, fuzzing and benchmarks need on a fresh Debian machine.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

PKGS=(
  # AF_XDP (xsk-rs / libxdp builds): compiler, BPF toolchain, libelf, zlib
  clang llvm libelf-dev zlib1g-dev libpcap-dev m4 pkg-config make gcc g++
  # live tests and benchmarks: namespaces, nftables baseline, capture, traffic generator
  iproute2 nftables tcpdump netsniff-ng sysstat ethtool iputils-ping netcat-openbsd
  # management socket scripting, instruction counts
  socat valgrind python3 procps
  # the fleet: etcd (the integration test starts a 3-member cluster on loopback) and protoc with the
  # well-known types, which the etcd-client crate's build script needs
  etcd-server etcd-client protobuf-compiler libprotobuf-dev
  # packaging: the .deb's unit checked by systemd-analyze, its contents by dpkg-deb; the audit picture
  systemd dpkg-dev graphviz
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done
# cargo deb builds the .deb (scripts/package.sh); installed once, from crates.io.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
