#!/usr/bin/env bash
# herd's whole test suite, from a fresh machine: installs the test peers
# (Python packages into tests/.venv), builds once, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian tools the tests drive: promtool (package prometheus) checks /metrics.
if ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends prometheus
fi

# Debian packages the tests need: nginx is herd-bench's baseline proxy
# (tests/tests/bench_smoke.rs). Installed only when missing (CI runs as
# root on a fresh Debian 12).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light
  else
    echo "run.sh: nginx is missing; install it with: apt-get install nginx-light" >&2
  fi
fi

# iproute2's `ip` builds the network namespaces of the mDNS tests
# (tests/tests/mdns_netns.rs; they need root).
if ! command -v ip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2
  else
    echo "run.sh: ip (iproute2) is missing; install it with: apt-get install iproute2" >&2
  fi
fi

venv=tests/.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
export HERD_TEST_PYTHON="$PWD/$venv/bin/python"

cargo build --workspace --locked --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc
