#!/usr/bin/env bash
# Intake load test (make bench-intake): builds agentbot and the load
# generator (internal/loadgen), starts `agentbot serve` on loopback with a
# fresh data dir, drives it from a second process with signed deliveries at
# 1, 16 and 64 concurrent senders, and prints p50/p90/p99 latency and
# acknowledged deliveries per second: first closed loop (each sender sends
# again as soon as it is answered: the most the server sustains), then open
# loop (64 senders sending OPEN_RATE deliveries/s together on a fixed
# schedule: latency at a given load). Then it SIGKILLs the server and checks,
# with `agentbot tasks --json`, that every acknowledged delivery is stored.
#
# Environment: DURATION (per level, default 10s), WARMUP (default 1s),
# CONCURRENCY (default 1,16,64), OPEN_RATE (default 2000; 0 skips),
# OPEN_SENDERS (default 64), PAYLOAD (default webhook/testdata/
# issue_comment.created.issue.json, a real-sized GitHub delivery),
# AGENTBOT_LOG_LEVEL (default info: one JSON log line per delivery, as in
# production; the log goes to a file).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-1s}"
CONCURRENCY="${CONCURRENCY:-1,16,64}"
OPEN_RATE="${OPEN_RATE:-2000}"
OPEN_SENDERS="${OPEN_SENDERS:-64}"
PAYLOAD="${PAYLOAD:-webhook/testdata/issue_comment.created.issue.json}"
export AGENTBOT_LOG_LEVEL="${AGENTBOT_LOG_LEVEL:-info}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -9 "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> building"
go build -o "$work/agentbot" ./cmd/agentbot
go build -o "$work/agentbot-load" ./internal/loadgen

printf '%s\n' "bench-secret-$RANDOM$RANDOM" > "$work/secret"
export AGENTBOT_DATA_DIR="$work/data" AGENTBOT_WEBHOOK_SECRET_FILE="$work/secret"

"$work/agentbot" serve --listen 127.0.0.1:0 2> "$work/serve.log" &
server_pid=$!
addr=""
for _ in $(seq 100); do
  addr="$(sed -n 's/.*"msg":"listening","addr":"\([^"]*\)".*/\1/p' "$work/serve.log" | head -1)"
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/serve.log"; exit 1; }

echo "==> machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> agentbot serve on $addr (log level $AGENTBOT_LOG_LEVEL), payload $PAYLOAD ($(wc -c < "$PAYLOAD") bytes), ${DURATION} per level after ${WARMUP} warm-up"
load() {
  "$work/agentbot-load" -url "http://$addr/webhook" -secret-file "$work/secret" \
    -payload "$PAYLOAD" -event "$(basename "$PAYLOAD" | cut -d. -f1)" \
    -duration "$DURATION" -warmup "$WARMUP" -acked-file "$work/acked" "$@"
}
load -concurrency "$CONCURRENCY"
if [ "$OPEN_RATE" != 0 ]; then
  load -concurrency "$OPEN_SENDERS" -rate "$OPEN_RATE"
fi

# utime+stime of the server, in clock ticks (fields 14 and 15 of /proc/PID/stat).
ticks="$(awk '{print $14 + $15}' "/proc/$server_pid/stat")"
acked="$(wc -l < "$work/acked")"
awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$acked" \
  'BEGIN { printf "==> server CPU: %.1f s for %d acknowledged deliveries (%.0f µs each, including warm-ups)\n", t/hz, n, 1e6*t/hz/n }'

echo "==> SIGKILL the server, then check every acknowledged delivery is stored"
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
"$work/agentbot" tasks --json --limit 0 | "$work/agentbot-load" verify -acked-file "$work/acked"
