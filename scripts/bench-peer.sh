#!/usr/bin/env bash
# Intake side by side with a peer (make bench-peer): agentbot against
# Atlantis, the Go GitHub bot that agentbot's intake is most often compared
# with. Builds agentbot, the load generator (internal/loadgen) and Atlantis
# (from the Go module proxy, into a temporary directory: nothing of it is
# kept or committed), runs both on loopback, and drives them with the same
# load generator and the same signed 16 KB issue_comment delivery
# (webhook/testdata/issue_comment.created.issue.json), closed loop, at 16 and
# 64 senders. The three configurations take turns within each round, so a
# neighbour's load on a shared machine falls on all of them alike:
#
#   agentbot, non-command  the delivery with its /agent turned into ?agent
#                          (same size): verified, parsed, answered 204
#   agentbot, /agent       the delivery itself: a task stored and fsynced
#                          before the 202 (durable)
#   Atlantis               the same /agent delivery, which is not an Atlantis
#                          command: verified, parsed, answered 200; it stores
#                          nothing and keeps no dedupe record
#
# It prints, per configuration and level, the median deliveries/s over the
# rounds (min–max) and the server's CPU time (user+system, from /proc) per
# delivery in the measured window, then the ratios against the targets.
#
# Environment: ROUNDS (default 3), DURATION (per run, default 5s), WARMUP
# (default 1s), CONCURRENCY (default 16,64), ATLANTIS_VERSION (default
# v0.35.0, a version the module proxy serves), AGENTBOT_LOG_LEVEL (default
# info: one JSON log line per delivery, as in production, to a file),
# AGENTBOT_BIN (an agentbot binary to measure instead of building this tree,
# e.g. an older commit's, for a before/after).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CONCURRENCY="${CONCURRENCY:-16,64}"
ATLANTIS_VERSION="${ATLANTIS_VERSION:-v0.35.0}"
PAYLOAD=webhook/testdata/issue_comment.created.issue.json
export AGENTBOT_LOG_LEVEL="${AGENTBOT_LOG_LEVEL:-info}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> building agentbot and the load generator"
if [ -n "${AGENTBOT_BIN:-}" ]; then
  cp "$AGENTBOT_BIN" "$work/agentbot"
else
  go build -o "$work/agentbot" ./cmd/agentbot
fi
go build -o "$work/agentbot-load" ./internal/loadgen

echo "==> building Atlantis $ATLANTIS_VERSION from the Go module proxy"
# `go install m@v` also asks the proxy for the module's version list (for a
# deprecation notice), which it does not serve for Atlantis; so download the
# module and build it as its own main module, with its own go.sum. The
# checksum database has no entry for it, hence GONOSUMDB for this module
# alone (its dependencies are still checked against its go.sum).
dir="$(GONOSUMDB=github.com/runatlantis/atlantis GOFLAGS=-mod=mod \
  go mod download -json "github.com/runatlantis/atlantis@$ATLANTIS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$dir" ] || { echo "bench-peer: could not download Atlantis $ATLANTIS_VERSION" >&2; exit 1; }
cp -r "$dir" "$work/atlantis-src"
chmod -R u+w "$work/atlantis-src"
(cd "$work/atlantis-src" && go build -o "$work/atlantis" .)

secret="bench-secret-$RANDOM$RANDOM"
printf '%s\n' "$secret" > "$work/secret"
# The non-command delivery: same bytes, but the comment's command line no
# longer starts with /agent.
sed 's|\\n/agent fix the typo|\\n?agent fix the typo|' "$PAYLOAD" > "$work/noncommand.json"
cmp -s "$PAYLOAD" "$work/noncommand.json" && { echo "bench-peer: could not make the non-command payload" >&2; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url pid log
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; return 1; }
    sleep 0.1
  done
  echo "bench-peer: $1 did not answer" >&2; cat "$3"; return 1
}

bot_port="$(port)"
AGENTBOT_DATA_DIR="$work/data" AGENTBOT_WEBHOOK_SECRET_FILE="$work/secret" \
  "$work/agentbot" serve --listen "127.0.0.1:$bot_port" 2> "$work/agentbot.log" &
bot_pid=$!
pids+=("$bot_pid")
wait_http "http://127.0.0.1:$bot_port/healthz" "$bot_pid" "$work/agentbot.log"

atl_port="$(port)"
# A token and user are required flags; nothing here reaches GitHub (the
# delivery is not an Atlantis command, so it is answered without a call).
(cd "$work" && exec "$work/atlantis" server --port "$atl_port" --atlantis-url "http://127.0.0.1:$atl_port" \
  --data-dir "$work/atlantis-data" --gh-user bench --gh-token bench-token --gh-webhook-secret "$secret" \
  --repo-allowlist '*' --log-level warn) > "$work/atlantis.log" 2>&1 &
atl_pid=$!
pids+=("$atl_pid")
wait_http "http://127.0.0.1:$atl_port/healthz" "$atl_pid" "$work/atlantis.log"

echo "==> machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "==> $ROUNDS rounds; each round runs the three in turn at each of $CONCURRENCY senders, ${DURATION} after ${WARMUP} warm-up; payload $PAYLOAD ($(wc -c < "$PAYLOAD") bytes)"

results="$work/results"
: > "$results"
run() { # name url pid expect payload level round
  local out
  out="$("$work/agentbot-load" -url "$2" -secret-file "$work/secret" -payload "$5" -event issue_comment \
    -duration "$DURATION" -warmup "$WARMUP" -concurrency "$6" -expect "$4" -cpu-pid "$3")"
  # The level's row: senders sent acked other acked/s p50 p90 p99 max cpu/acked.
  awk -v name="$1" -v round="$7" 'NR > 2 { sub(/ms$/, "", $10); print name, $1, round, $5, $10, $4 }' <<<"$out" | tee -a "$results" |
    awk '{ printf "    %-22s senders=%-3s round=%s  %6s deliveries/s  %s ms CPU each  (%s other)\n", $1, $2, $3, $4, $5, $6 }'
}

IFS=, read -ra levels <<<"$CONCURRENCY"
for round in $(seq "$ROUNDS"); do
  for level in "${levels[@]}"; do
    # Rotate who goes first, so no configuration always follows another.
    order=(noncommand agent atlantis)
    shift_by=$(( (round - 1) % 3 ))
    order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
    for cfg in "${order[@]}"; do
      case "$cfg" in
        noncommand) run agentbot-noncommand "http://127.0.0.1:$bot_port/webhook" "$bot_pid" 204 "$work/noncommand.json" "$level" "$round" ;;
        agent) run agentbot-agent "http://127.0.0.1:$bot_port/webhook" "$bot_pid" 202 "$PAYLOAD" "$level" "$round" ;;
        atlantis) run atlantis "http://127.0.0.1:$atl_port/events" "$atl_pid" 200 "$PAYLOAD" "$level" "$round" ;;
      esac
    done
  done
done

echo
echo "==> medians over $ROUNDS rounds (min–max); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data = {}
for name, level, _round, rate, cpu, _other in rows:
    data.setdefault((name, int(level)), []).append((float(rate), float(cpu) if cpu != "-" else float("nan")))
names = [("agentbot-noncommand", "agentbot, non-command"), ("agentbot-agent", "agentbot, /agent (task committed)"), ("atlantis", "Atlantis (stores nothing)")]
levels = sorted({l for _, l in data})
def span(xs, fmt):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
print("| | " + " | ".join(label for _, label in names) + " |")
print("|---|" + "---|" * len(names))
for level in levels:
    print(f"| deliveries/s, {level} senders | " + " | ".join(span([r for r, _ in data[(n, level)]], "{:,.0f}") for n, _ in names) + " |")
for level in levels:
    print(f"| CPU ms per delivery, {level} senders | " + " | ".join(span([c for _, c in data[(n, level)]], "{:.3f}") for n, _ in names) + " |")
print()
for level in levels:
    atl = statistics.median(r for r, _ in data[("atlantis", level)])
    agent = statistics.median(r for r, _ in data[("agentbot-agent", level)])
    non = statistics.median(r for r, _ in data[("agentbot-noncommand", level)])
    cpu = statistics.median(c for _, c in data[("agentbot-agent", level)])
    print(f"{level} senders: /agent {agent/atl:.2f}× Atlantis (target ≥ 2.5×: {'met' if agent/atl >= 2.5 else 'NOT met'}); "
          f"non-command {non/atl:.2f}× (target ≥ 3×: {'met' if non/atl >= 3 else 'NOT met'}); "
          f"CPU per durable delivery {cpu:.3f} ms (target ≤ 0.15: {'met' if cpu <= 0.15 else 'NOT met'})")
PY
