#!/usr/bin/env bash
# Runs every test of kpistream. It first installs what the tests need, so it
# works on a fresh machine: this is the README's test command and CI's.
#
# - tansu, a Kafka-protocol broker, built from crates.io with its sqlite
#   storage (so that it survives a restart) into ~/.cache/kpistream-tools;
# - promtool and prometheus, from Debian's `prometheus` package;
# - openssl and curl, from Debian, if the machine lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${KPISTREAM_TOOLS:-$HOME/.cache/kpistream-tools}
export KPISTREAM_TANSU=${KPISTREAM_TANSU:-$TOOLS/tansu-0.6.0-libsql/bin/tansu}
if [ ! -x "$KPISTREAM_TANSU" ]; then
  echo "== installing the tansu broker (once; 15 to 35 minutes on two cores)"
  cargo install tansu --version 0.6.0 --locked --features libsql \
    --root "$TOOLS/tansu-0.6.0-libsql" --quiet
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "== installing prometheus and promtool"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi

if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
  echo "== installing openssl and curl (tests/tls.rs makes a certificate and calls HTTPS)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl curl >/dev/null
fi

echo "== formatting and lints"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

echo "== tests (unit, property, integration; benches run once in test mode)"
KPISTREAM_BENCH_EVENTS=20000 KPISTREAM_BENCH_DEALS=20000 cargo test --all-targets
