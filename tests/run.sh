#!/usr/bin/env bash
# herd's whole test suite, from a fresh machine: installs the test peers
# (Python packages into tests/.venv), builds once, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, installed only when missing (CI runs as
# root on a fresh Debian 12): promtool (package prometheus) checks /metrics;
# nginx is herd-bench's baseline proxy; ip (iproute2) builds the network
# namespaces of the mDNS tests.
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
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
