#!/usr/bin/env bash
# Installs the outside programs the test suite drives (Debian packages), only when missing.
# Idempotent; a no-op on a machine that already has them.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v node >/dev/null 2>&1 || need+=(nodejs)
# npm installs TypeScript for the browser client's type check (Debian ships it apart from nodejs).
command -v npm >/dev/null 2>&1 || need+=(npm)
# The Python SDK's tests run in a venv; Debian's python3 has no venv/ensurepip without this.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need+=(redis-server)
# The Sentinel tests (tests/sentinel.rs) run Debian's redis-sentinel.
command -v redis-sentinel >/dev/null 2>&1 || [ -x /usr/bin/redis-sentinel ] || need+=(redis-sentinel)
# The Redis Cluster tests (tests/redis_cluster.rs) make the cluster with redis-cli.
command -v redis-cli >/dev/null 2>&1 || [ -x /usr/bin/redis-cli ] || need+=(redis-tools)
# scripts/schemathesis.sh: a venv with pip; scripts/deb-test.sh: curl, and dpkg-shlibdeps for
# the package's computed dependencies.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cd "$(dirname "$0")/.."
# Schemathesis (PyPI) into a venv under target/, pinned: scripts/schemathesis.sh.
ST_VERSION=$(sed -n 's/^ST_VERSION=//p' scripts/schemathesis.sh)
if ! target/schemathesis-venv/bin/schemathesis --version 2>/dev/null | grep -q "$ST_VERSION"; then
  echo "== installing schemathesis $ST_VERSION into target/schemathesis-venv"
  python3 -m venv target/schemathesis-venv
  target/schemathesis-venv/bin/pip install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
fi
# cargo-deb (crates.io), pinned: scripts/deb-test.sh. About 2 minutes to build on 2 cores.
CARGO_DEB_VERSION=$(sed -n 's/^CARGO_DEB_VERSION=//p' scripts/deb-test.sh)
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "== cargo install cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
