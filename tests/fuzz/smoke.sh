#!/usr/bin/env bash
# herd's fuzz smoke test: builds the cargo-fuzz targets of tests/fuzz and
# runs each one for a few seconds from its committed seed corpus (which
# holds the inputs of past crashes, so a bug that comes back fails here).
# Exits non-zero on any crash, hang, or build failure.
#
#   tests/fuzz/smoke.sh                 # every target, 5 s each
#   tests/fuzz/smoke.sh parse report    # some targets
#   HERD_FUZZ_SECONDS=60 tests/fuzz/smoke.sh
#
# Needs a nightly Rust toolchain (cargo-fuzz instruments with -Z flags);
# installs cargo-fuzz when it is missing. New inputs the fuzzer finds go to
# a temporary directory, never into the committed corpus; crash inputs are
# written to tests/fuzz/artifacts/<target>/.
#
# Build flags: `-s none` (no AddressSanitizer: every herd crate is
# `forbid(unsafe_code)`, the bugs to find are panics and broken
# invariants, and it runs several times faster) and `--debug-assertions`
# (overflow checks and debug_assert! on, as in `cargo test`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${HERD_FUZZ_SECONDS:-5}"
all=(parse translate_response relay_framing report extproc)
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=("${all[@]}")
fi

# The nightly toolchain that is installed (or the one named in
# HERD_FUZZ_TOOLCHAIN).
toolchain="${HERD_FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ] && command -v rustup >/dev/null 2>&1; then
  toolchain="$(rustup toolchain list 2>/dev/null | awk '/^nightly/ {print $1; exit}')"
fi
if [ -z "$toolchain" ] || ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  echo "smoke.sh: no nightly Rust toolchain found; cargo-fuzz needs one." >&2
  echo "          install it with:  rustup toolchain install nightly" >&2
  echo "          (or name one with HERD_FUZZ_TOOLCHAIN=nightly-YYYY-MM-DD)" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "smoke.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd "$here"
started=$(date +%s)
echo "smoke.sh: building fuzz targets with $toolchain"
cargo "+$toolchain" fuzz build -s none --debug-assertions
host="$(rustup run "$toolchain" rustc -vV | sed -n 's/^host: //p')"
bin="$here/target/$host/release"
built=$(date +%s)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  if [ ! -x "$bin/$t" ]; then
    echo "smoke.sh: no fuzz target named $t (targets: ${all[*]})" >&2
    exit 2
  fi
  mkdir -p "$work/$t" "$here/artifacts/$t"
  log="$work/$t.log"
  touch "$work/$t.stamp"
  if "$bin/$t" "$work/$t" "$here/corpus/$t" \
      -dict="$here/dict/herd.dict" \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
      -artifact_prefix="$here/artifacts/$t/" -print_final_stats=1 \
      >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "ok    $t: ${runs:-?} runs, ${rate:-?}/s, 0 crashes"
  else
    failed+=("$t")
    echo "FAIL  $t: the fuzzer stopped on a crash, hang or OOM; its output:"
    grep -A3 -e 'panicked at' "$log" | grep -v -e '^stack backtrace' | head -12
    grep -e '^SUMMARY' -e '^==[0-9]*== ERROR' -e 'Test unit written' "$log" | head -4
    find "$here/artifacts/$t" -type f -newer "$work/$t.stamp" | sed "s|^$here/|      input: tests/fuzz/|"
  fi
done
ended=$(date +%s)
echo "smoke.sh: build $((built - started)) s, fuzzing $((ended - built)) s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "smoke.sh: FAILED: ${failed[*]}" >&2
  echo "          reproduce: cd tests/fuzz && cargo +$toolchain fuzz run -s none -a <target> <input>" >&2
  exit 1
fi
