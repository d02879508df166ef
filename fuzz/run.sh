#!/usr/bin/env bash
# Runs every fuzz target (libFuzzer through cargo fuzz) for RUNS executions
# each (default 1,000,000), from seed corpora made of the project's own
# fixtures: the golden log for the canonical parser, the CRM fixtures for
# the adapters, real snapshots for the decoder. Any crash stops the run
# with libFuzzer's report and the input in fuzz/artifacts/TARGET/.
#
#   bash fuzz/run.sh [RUNS] [TARGET...]
#
# cargo fuzz wants a nightly compiler; the stable toolchain here is told to
# accept its flags with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${1:-1000000}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(canonical hubspot pipedrive salesforce close zoho snapshot)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
fx=../tests/fixtures

seed_lines() { # target file
  mkdir -p "corpus/$1"
  split -l 1 -d -a 5 "$2" "corpus/$1/$(basename "$2" .ndjson)-"
}
if [ ! -d corpus ]; then
  mkdir -p corpus/canonical
  head -n 2000 "$fx/golden/events.ndjson" | split -l 20 -d -a 4 - corpus/canonical/golden-
  seed_lines hubspot "$fx/crm/hubspot.ndjson"
  seed_lines pipedrive "$fx/crm/pipedrive.ndjson"
  seed_lines salesforce "$fx/crm/salesforce.ndjson"
  seed_lines close "$fx/crm/close.ndjson"
  seed_lines zoho "$fx/crm/zoho.ndjson"
  cargo run --quiet --release --bin seed -- corpus/snapshot "$fx/golden/events.ndjson"
fi
for t in "${TARGETS[@]}"; do
  echo "== $t: $RUNS executions"
  if ! cargo fuzz run "$t" "corpus/$t" -- -runs="$RUNS" -max_len=65536 -print_final_stats=1 \
      >"$t.log" 2>&1; then
    tail -n 40 "$t.log"
    echo "FAILED: crash inputs (if any) in fuzz/artifacts/$t, log in fuzz/$t.log"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$t.log"
done
