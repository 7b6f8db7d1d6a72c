#!/usr/bin/env bash
# Builds the Debian package with cargo-deb from a release build, installs it with dpkg (as root:
# run it on a disposable test machine), runs the packaged binary with the packaged config and
# checks /health, then purges the package and checks that it is gone. The package is removed
# however the script ends. systemd is not required: the unit is checked with
# `systemd-analyze verify` when that exists, and the binary runs directly as the unit would.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
target_dir=${CARGO_TARGET_DIR:-target}

if [ "$(id -u)" -ne 0 ]; then
  echo "deb-test: needs root (dpkg -i); skipped" >&2
  exit 1
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "== cargo install cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

echo "== cargo build --release --bin tether"
cargo build --release --locked --bin tether
echo "== cargo deb --no-build"
deb=$(cargo deb --no-build --output "$target_dir/debian/" | tail -1)
[ -f "$deb" ] || { echo "cargo deb did not say where the package is: $deb" >&2; exit 1; }
echo "   $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'

pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  dpkg --purge tether >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A leftover from an earlier run that died before its cleanup.
dpkg --purge tether >/dev/null 2>&1 || true
echo "== dpkg -i"
dpkg -i "$deb"
for f in /usr/bin/tether /etc/tether/tether.toml /lib/systemd/system/tether.service \
         /etc/tether/api_key /etc/tether/auth_hmac_secret; do
  [ -e "$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
getent passwd tether >/dev/null || { echo "no tether user" >&2; exit 1; }
[ "$(stat -c '%U:%G %a' /etc/tether/api_key)" = "root:tether 640" ] \
  || { echo "api_key: $(stat -c '%U:%G %a' /etc/tether/api_key)" >&2; exit 1; }
dpkg-query -W -f='${Conffiles}\n' tether | grep -q /etc/tether/tether.toml \
  || { echo "tether.toml is not a conffile" >&2; exit 1; }

if command -v systemd-analyze >/dev/null 2>&1; then
  echo "== systemd-analyze verify tether.service"
  systemd-analyze verify /lib/systemd/system/tether.service
else
  echo "== systemd-analyze not found: the unit was not verified"
fi

# The packaged binary and config, as the unit runs them (user tether), on a free loopback port
# instead of 8080; nothing else is changed.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
echo "== /usr/bin/tether --config /etc/tether/tether.toml (as tether, on 127.0.0.1:$port)"
setpriv --reuid tether --regid tether --init-groups env TETHER_LISTEN="127.0.0.1:$port" \
  /usr/bin/tether --config /etc/tether/tether.toml >"$log" 2>&1 &
pid=$!
ok=""
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"status":"ok"'; then ok=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$ok" ] || { echo "no healthy tether" >&2; cat "$log" >&2; exit 1; }
echo "   /health: $(curl -fsS "http://127.0.0.1:$port/health")"
# The generated key opens the API; no key does not.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/v1/sessions")
[ "$code" = 401 ] || { echo "API without the key answered $code" >&2; exit 1; }
curl -fsS -H "Authorization: Bearer $(cat /etc/tether/api_key)" \
  "http://127.0.0.1:$port/api/v1/sessions" >/dev/null
# SIGHUP reloads the token keys (systemctl reload) and the process goes on.
kill -HUP "$pid"
for _ in $(seq 50); do grep -q "SIGHUP: token keys reloaded" "$log" && break; sleep 0.1; done
grep -q "SIGHUP: token keys reloaded" "$log" || { echo "no reload on SIGHUP" >&2; cat "$log" >&2; exit 1; }
# SIGTERM drains and exits 0, as `systemctl stop` expects.
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
pid=""
[ "$status" = 0 ] || { echo "exit status $status after SIGTERM" >&2; cat "$log" >&2; exit 1; }
rm -f "$log"

echo "== dpkg --purge"
dpkg --purge tether
for f in /usr/bin/tether /etc/tether /lib/systemd/system/tether.service /usr/share/doc/tether; do
  [ ! -e "$f" ] || { echo "left behind: $f" >&2; exit 1; }
done
echo "== deb-test passed"
