#!/usr/bin/env bash
# The documented soak run of the README: `kpistream run` on a tansu broker
# for DURATION seconds (default 1800) with the simulator at a steady RATE
# (default 1000 messages/s) plus bursts, a scrape of /metrics and an API
# call every 10 s, and a broker restart half-way. Every 10 s it records RSS
# and open file descriptors; at the end it checks that the outcome counters
# account for every message in the topic, and prints RSS at the start of
# the steady state, its peak and its end, and the descriptor counts.
#
#   bash benches/soak.sh [DURATION] [RATE]
#
# Event time runs at one message per 50 s (--event-rate 0.02), so that the
# 92 days for which idle entities are kept (the quarter-to-date window) pass
# after ~160k messages, and state reaches its steady size in the first
# minutes; the dedup horizon is one day.
#
# tansu 0.6 panics (lite.rs:503, "more or less than one row") when an
# idempotent producer from before its restart produces again; Kafka does
# not. So the first half's producers end before the restart, its malformed
# messages (and so its dead letters) are all consumed before it, and the
# second half's producers are new processes with no faults.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800}
RATE=${2:-1000}
HALF=$((DURATION / 2))
TOOLS=${KPISTREAM_TOOLS:-$HOME/.cache/kpistream-tools}
TANSU=${KPISTREAM_TANSU:-$TOOLS/tansu-0.6.0-libsql/bin/tansu}
[ -x "$TANSU" ] || cargo install tansu --version 0.6.0 --locked --features libsql --root "$TOOLS/tansu-0.6.0-libsql"
cargo build --release --quiet
BIN=$PWD/target/release/kpistream

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
http=$(free_port)
B="127.0.0.1:$port"
start_broker() {
  (cd "$work" && exec "$TANSU" broker --listener-url "tcp://$B" --advertised-listener-url "tcp://$B" \
    --storage-engine sqlite://tansu.db >>tansu.log 2>&1) &
  tansu_pid=$!
  sleep 2
}
pids=()
trap 'set +e; kill $tansu_pid ${svc_pid:-} "${pids[@]}" 2>/dev/null; echo "logs in $work"; true' EXIT
start_broker
"$TANSU" topic create --broker "tcp://$B" --partitions 3 crm-events >/dev/null 2>&1 || true
"$TANSU" topic create --broker "tcp://$B" --partitions 1 crm-events-dlq >/dev/null 2>&1 || true

KPISTREAM__KAFKA__BROKERS=$B KPISTREAM__KAFKA__GROUP_ID="soak-$$" \
KPISTREAM__SNAPSHOT__DIR="$work/snap" KPISTREAM__SNAPSHOT__INTERVAL=30s \
KPISTREAM__CLOCK=event KPISTREAM__HTTP__LISTEN="127.0.0.1:$http" \
KPISTREAM__DEDUP__HORIZON=1d \
  "$BIN" run >"$work/svc.log" 2>&1 &
svc_pid=$!
sleep 2

produce() { # seed count rate [--faults]
  "$BIN" simulate --brokers "$B" --topic crm-events --seed "$1" --count "$2" --rate "$3" \
    --reps 200 --team-count 8 --event-rate 0.02 ${4:-} >>"$work/sim.log" 2>&1
}
produced=0
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
accounted() { curl -s "127.0.0.1:$http/metrics" | awk '/^kpistream_events_total/ {s+=$2} END {printf "%d", s}'; }
lag() { curl -s "127.0.0.1:$http/metrics" | awk '/^kpistream_consumer_lag_messages/ {s+=$2} END {printf "%d", s}'; }
sample() {
  local rss fds s0 s1 api
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$svc_pid/status")
  fds=$(ls "/proc/$svc_pid/fd" | wc -l)
  s0=$(date +%s.%N)
  curl -sf "127.0.0.1:$http/metrics" -o /dev/null
  s1=$(date +%s.%N)
  api=$(curl -sf "127.0.0.1:$http/api/v1/kpis?scope=team&window=24h" | wc -c)
  echo "$(elapsed) $rss $fds $(python3 -c "print(round($s1-$s0,3))") $api $(accounted)" >>"$work/samples.txt"
}
monitor_until() { # seconds since start
  while [ "$(elapsed)" -lt "$1" ]; do sample; sleep 10; done
}

echo "first half: $HALF s at $RATE msg/s with faults, bursts of 50,000 at 1/3 and 2/3 of it"
produce 1 $((RATE * HALF)) "$RATE" --faults & pids+=($!)
produced=$((produced + RATE * HALF))
monitor_until $((HALF / 3)); produce 2 50000 0 --faults & pids+=($!); produced=$((produced + 50000))
monitor_until $((2 * HALF / 3)); produce 3 50000 0 --faults & pids+=($!); produced=$((produced + 50000))
monitor_until "$HALF"
wait "${pids[@]}"; pids=()
while [ "$(accounted)" -lt "$produced" ]; do sample; sleep 5; done

echo "broker restart at $(elapsed) s"
kill -9 "$tansu_pid"; wait "$tansu_pid" 2>/dev/null || true
sleep 3
start_broker

REST=$((DURATION - $(elapsed)))
echo "second half: $REST s at $RATE msg/s, bursts at 1/3 and 2/3 of it"
produce 4 $((RATE * REST)) "$RATE" & pids+=($!)
produced=$((produced + RATE * REST))
base=$(elapsed)
monitor_until $((base + REST / 3)); produce 5 50000 0 & pids+=($!); produced=$((produced + 50000))
monitor_until $((base + 2 * REST / 3)); produce 6 50000 0 & pids+=($!); produced=$((produced + 50000))
monitor_until "$DURATION"
wait "${pids[@]}"; pids=()
deadline=$(( $(date +%s) + 600 ))
while [ "$(accounted)" -lt "$produced" ] && [ "$(date +%s)" -lt "$deadline" ]; do sample; sleep 5; done
sample
curl -s "127.0.0.1:$http/metrics" | grep '^kpistream_events_total' >"$work/outcomes.txt"

python3 - "$work/samples.txt" "$produced" "$(accounted)" "$(lag)" "$work/outcomes.txt" <<'EOF'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
produced, accounted, lag = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
steady = [r for r in rows if r[0] >= 0.2 * rows[-1][0]]
mib = lambda kb: kb / 1024
print(f"samples: {len(rows)} over {rows[-1][0]:.0f} s")
print(f"RSS: start of steady state (t={steady[0][0]:.0f} s) {mib(steady[0][1]):.0f} MiB, "
      f"peak {mib(max(r[1] for r in rows)):.0f} MiB, end {mib(rows[-1][1]):.0f} MiB")
print(f"open fds: first {rows[0][2]:.0f}, max {max(r[2] for r in rows):.0f}, end {rows[-1][2]:.0f}")
scr = sorted(r[3] for r in rows)
print(f"scrape seconds: median {scr[len(scr)//2]:.3f}, max {scr[-1]:.3f}")
print(f"messages produced {produced}, accounted by the outcome counters {accounted}, lag {lag}")
print(open(sys.argv[5]).read().strip())
ok = accounted == produced and lag == 0
print("every message accounted for" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
EOF
kill -TERM "$svc_pid"; wait "$svc_pid" || true
