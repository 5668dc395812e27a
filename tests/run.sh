#!/usr/bin/env bash
# herd's whole test suite, from a fresh machine: installs the test peers
# (Python packages into tests/.venv), builds once, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, installed only when missing (CI runs as
# root on a fresh Debian 12): promtool (package prometheus) checks /metrics;
# nginx is herd-bench's baseline proxy; ip (iproute2) builds the network
# namespaces of the mDNS tests; espeak-ng speaks the WAV the
# speech-to-text tests upload; chromium, nodejs and npm run the dashboard's
# browser tests (playwright-core from tests/package-lock.json drives
# Debian's chromium; no browser is downloaded).
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
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

# The browser tests' npm packages, exactly as locked (never `npx
# playwright install`: the tests use Debian's chromium).
npm ci --prefix tests --no-audit --no-fund --silent
export HERD_TEST_NODE="$(command -v node)"

cargo build --workspace --locked --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
cargo test --workspace --locked --doc

# Fuzz smoke: every cargo-fuzz target a few seconds from its committed seed
# corpus, which keeps the inputs of every crash found so far (needs the
# nightly toolchain; installs cargo-fuzz when missing). Longer runs:
# HERD_FUZZ_SECONDS=600 tests/fuzz/smoke.sh <target>.
tests/fuzz/smoke.sh
