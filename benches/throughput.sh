#!/usr/bin/env bash
# The documented throughput run (docs/performance.md): the simulator loads N
# events (default 5,000,000) for REPS reps (default 300, in REPS/8+2 teams)
# into a 3-partition topic of a tansu broker, then kcat and kpistream each
# consume the whole topic from offset 0, in the same run. Prints events/s of
# both, their ratio, kpistream's peak RSS, and the CPU time per message of
# `kpistream run` (user + system, from its own accounting) against that of
# `kpistream replay` over the same messages: a figure that holds even when
# the broker is the bottleneck.
#
#   REPS=300 bash benches/throughput.sh [N]
#
# Needs: tansu (tests/run.sh installs it), kcat (Debian), and a librdkafka
# recent enough for tansu (Debian's kcat links librdkafka 2.0, which tansu
# refuses; this script builds the one vendored by rdkafka-sys once and runs
# kcat on it through LD_LIBRARY_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000000}
REPS=${REPS:-300}
TEAMS=$(( REPS <= 16 ? 3 : REPS / 8 + 2 ))
TOOLS=${KPISTREAM_TOOLS:-$HOME/.cache/kpistream-tools}
TANSU=${KPISTREAM_TANSU:-$TOOLS/tansu-0.6.0-libsql/bin/tansu}
RDK=$TOOLS/librdkafka-2.12.1

command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat; }
[ -x "$TANSU" ] || cargo install tansu --version 0.6.0 --locked --features libsql --root "$TOOLS/tansu-0.6.0-libsql"
if [ ! -e "$RDK/lib/librdkafka.so.1" ]; then
  src=$(ls -d "$HOME"/.cargo/registry/src/*/rdkafka-sys-4.10.0+2.12.1/librdkafka | head -1)
  work=$(mktemp -d)
  cp -r "$src" "$work/librdkafka"
  (cd "$work/librdkafka" && ./configure --prefix="$RDK" --disable-zstd --disable-lz4-ext \
     --disable-sasl --disable-gssapi --disable-curl >/dev/null && make -j2 libs >/dev/null && make install-subdirs >/dev/null)
  rm -rf "$work"
fi
cargo build --release --quiet

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db >tansu.log 2>&1) &
tansu_pid=$!
trap 'set +e; kill $tansu_pid 2>/dev/null; kill ${svc_pid:-0} 2>/dev/null; rm -rf "$work"; true' EXIT
sleep 2
"$TANSU" topic create --broker "tcp://127.0.0.1:$port" --partitions 3 crm-events >/dev/null 2>&1 || true

echo "loading $N simulated events into tansu..."
load_start=$(date +%s.%N)
./target/release/kpistream simulate --brokers "127.0.0.1:$port" --topic crm-events --count "$N" \
  --seed 11 --reps "$REPS" --team-count "$TEAMS" --teams-out "$work/teams.json" 2>"$work/sim.log"
load_end=$(date +%s.%N)
echo "loaded in $(python3 -c "print(round($load_end-$load_start,1))") s"

echo "kcat (librdkafka 2.12.1) consuming the topic to /dev/null..."
k_start=$(date +%s.%N)
LD_LIBRARY_PATH="$RDK/lib" kcat -C -b "127.0.0.1:$port" -t crm-events -o beginning -e -q \
  -X fetch.wait.max.ms=10 >/dev/null
k_end=$(date +%s.%N)

echo "kpistream consuming the topic from offset 0..."
s_start=$(date +%s.%N)
KPISTREAM__KAFKA__BROKERS="127.0.0.1:$port" KPISTREAM__KAFKA__TOPICS=crm-events \
KPISTREAM__KAFKA__GROUP_ID="tp-$$" KPISTREAM__SNAPSHOT__DIR="$work/snap" \
KPISTREAM__TEAMS_FILE="$work/teams.json" KPISTREAM__CLOCK=event \
KPISTREAM__HTTP__LISTEN="127.0.0.1:$http" KPISTREAM__SNAPSHOT__EVERY_EVENTS=1000000 \
  ./target/release/kpistream run >"$work/svc.log" 2>&1 &
svc_pid=$!
peak=0
first=""
while :; do
  # The org's outcome counts from the API: rendering /metrics (every KPI
  # series) this often would cost the service more than the messages do.
  done_n=$(curl -s "127.0.0.1:$http/api/v1/kpis?scope=org&window=1h" \
    | python3 -c 'import json,sys; print(sum(json.load(sys.stdin).get("outcomes", {}).values()))' 2>/dev/null || echo 0)
  # kcat assigns partitions directly; kpistream joins a consumer group first.
  # Its rate is counted from its first processed event (join time excluded).
  [ -z "$first" ] && [ "${done_n%.*}" -gt 0 ] && first=$(date +%s.%N)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$svc_pid/status" 2>/dev/null || echo 0)
  [ "${rss:-0}" -gt "$peak" ] && peak=$rss
  [ "${done_n%.*}" -ge "$N" ] && break
  sleep 0.2
done
s_end=$(date +%s.%N)
# CPU seconds of the service so far (utime + stime, in clock ticks).
run_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$svc_pid/stat")
kill -TERM $svc_pid; wait $svc_pid || true

echo "kpistream replay over the same messages..."
./target/release/kpistream simulate --count "$N" --seed 11 --reps "$REPS" --team-count "$TEAMS" > "$work/events.ndjson"
/usr/bin/time -o "$work/replay.time" -f "%U %S" ./target/release/kpistream replay \
  --input "$work/events.ndjson" --teams "$work/teams.json" >/dev/null 2>&1
replay_cpu=$(awk '{print $1 + $2}' "$work/replay.time")

python3 - "$N" "$k_start" "$k_end" "$first" "$s_end" "$peak" "$s_start" "$run_cpu" "$replay_cpu" <<'EOF'
import sys
n, ks, ke, ss, se, peak, start, run_cpu, replay_cpu = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6]), *map(float, sys.argv[7:10])
k, s = n / (ke - ks), n / (se - ss)
print(f"kcat:      {k:12,.0f} events/s ({ke-ks:.1f} s)")
print(f"kpistream: {s:12,.0f} events/s ({se-ss:.1f} s after joining the group in {ss-start:.1f} s), {s/k:.0%} of kcat, peak RSS {peak/1024:.0f} MiB")
print(f"CPU per message: run {run_cpu / n * 1e6:.2f} us, replay {replay_cpu / n * 1e6:.2f} us, ratio {run_cpu / replay_cpu:.2f}")
EOF
