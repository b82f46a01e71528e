#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh) and checks it: the files it must hold (dpkg-deb -c), its
# conffiles, that the man pages and completions are well formed, and that the systemd unit passes
# `systemd-analyze verify` with no warning against the unpacked package (its ExecStart binary
# included) — without installing anything on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(scripts/package.sh | tail -1)
fail() { echo "test-package: $*" >&2; exit 1; }

contents=$(dpkg-deb -c "$deb" | awk '{print $NF}')
for f in ./usr/bin/joypath ./lib/systemd/system/joypath.service ./etc/joypath/gateway.toml \
         ./etc/default/joypath ./usr/share/man/man1/joypath.1.gz ./usr/share/man/man1/joypath-run.1.gz \
         ./usr/share/man/man1/joypath-ctl-explain.1.gz ./usr/share/bash-completion/completions/joypath \
         ./usr/share/zsh/vendor-completions/_joypath ./usr/share/fish/vendor_completions.d/joypath.fish \
         ./usr/share/doc/joypath/grafana-dashboard.json; do
  grep -qx "$f" <<<"$contents" || fail "$deb lacks $f"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/joypath/gateway.toml || fail "gateway.toml is not a conffile"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/default/joypath || fail "/etc/default/joypath is not a conffile"
[ "$(dpkg-deb -f "$deb" Package)" = joypath ] || fail "package name"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/joypath" check --config "$root/etc/joypath/gateway.toml" >/dev/null || fail "the example config does not check"
zcat "$root/usr/share/man/man1/joypath-run.1.gz" | grep -q 'metrics.*listen' || fail "joypath-run(1) lacks --metrics-listen"
bash -n "$root/usr/share/bash-completion/completions/joypath" || fail "bash completion does not parse"
grep -q 'explain' "$root/usr/share/bash-completion/completions/joypath" || fail "bash completion lacks ctl explain"

if ! systemd-analyze --version >/dev/null 2>&1; then
  echo "test-package: SKIPPED systemd-analyze verify: systemd-analyze cannot run here" >&2
else
  # The unit's targets and /bin/kill, as on the host, beside the unpacked package.
  mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
  [ -e "$root/lib" ] || ln -s usr/lib "$root/lib"
  cp -a /usr/lib/systemd/system/*.target "$root/lib/systemd/system/"
  cp /bin/kill "$root/bin/"
  out=$(systemd-analyze verify --man=no --root="$root" joypath.service 2>&1) || fail "systemd-analyze verify failed: $out"
  [ -z "$out" ] || fail "systemd-analyze verify warns: $out"
fi
echo "test-package: $deb ok ($(wc -l <<<"$contents") entries)"
