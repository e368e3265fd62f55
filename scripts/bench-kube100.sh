#!/usr/bin/env bash
# One bot, a hundred sandboxes (make bench-kube100): runs BenchmarkKube100
# (e2e/kube100_test.go) — the real `agentbot serve` with the Kubernetes
# launcher against internal/kubetest's control plane (etcd, kube-apiserver,
# the agent-sandbox controller, the stand-in kubelet serving real pods/exec
# streams) — with TASKS tasks at AGENTBOT_MAX_CONCURRENT=TASKS whose agents
# print a line a second for AGENT_SECONDS. It builds the test environment's
# binaries first (hack/testenv/build.sh; seconds when they are up to date),
# prints the figures and records them in the "One bot, a hundred sandboxes"
# section of docs/benchmarks.md.
#
# Environment: TASKS (default 100), AGENT_SECONDS (default 60; 20 for a
# shorter run), WARM (the warm pool's replicas, default 0: every claim
# cold-starts), DOC (default docs/benchmarks.md; "-" prints only).
set -euo pipefail
cd "$(dirname "$0")/.."

TASKS="${TASKS:-100}"
AGENT_SECONDS="${AGENT_SECONDS:-60}"
WARM="${WARM:-0}"
DOC="${DOC:-docs/benchmarks.md}"

hack/testenv/build.sh
export AGENTBOT_KUBE_TESTS=1 BENCH_KUBE_TASKS="$TASKS" AGENTBOT_BENCH_AGENT_SECONDS="$AGENT_SECONDS" BENCH_KUBE_WARM="$WARM"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
echo "==> go test -bench BenchmarkKube100 -benchtime 1x ./e2e (${TASKS} tasks, agents of ${AGENT_SECONDS} s, warm pool ${WARM})"
if ! go test -run '^$' -bench '^BenchmarkKube100$' -benchtime 1x -timeout 45m ./e2e >"$out" 2>&1; then
  grep -v '^\s*{"\|^\s*>\|^        [EIW][0-9]' "$out" | tail -40
  echo "bench-kube100: the benchmark failed" >&2
  exit 1
fi
line="$(grep -o 'BENCH-KUBE100 .*' "$out" | tail -1 || true)"
[ -n "$line" ] || { tail -40 "$out"; echo "bench-kube100: no result line" >&2; exit 1; }
last="$(grep -o 'BENCH-KUBE100-LAST-TASK .*' "$out" | tail -1 | sed 's/^BENCH-KUBE100-LAST-TASK //; s/,/, /g; s/_/ /g; s/:/ /g' || true)"
val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
failed=$(val failed); rss=$(val peak_rss_mb); cpu=$(val cpu_s)
p50=$(val ready_p50_ms); p99=$(val ready_p99_ms); rmax=$(val ready_max_ms); rn=$(val ready_n)
errs=$(val exec_errors); reatt=$(val reattaches); cfail=$(val claim_failures)
gor=$(val peak_goroutines); watches=$(val peak_claim_watches)
tail_s=$(val last_exit_to_last_pr_s); total_s=$(val first_delivery_to_last_pr_s)
verdict() { awk -v v="$1" -v lim="$2" 'BEGIN { print (v < lim) ? "met" : "MISSED" }'; }
v_rss=$(verdict "$rss" 300); v_p99=$(verdict "$p99" 1000)
v_err=$(awk -v e="$errs" -v f="$failed" -v c="$cfail" 'BEGIN { print (e + f + c == 0) ? "met" : "MISSED" }')

cpu_model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
cores="$(nproc)"
today="$(date -u +%Y-%m-%d)"
loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"

section="$(cat <<MD
<!-- bench-kube100:start -->
## One bot, a hundred sandboxes

\`make bench-kube100\` (scripts/bench-kube100.sh, e2e/kube100_test.go), TASKS=${TASKS}
AGENT_SECONDS=${AGENT_SECONDS} WARM=${WARM}: the real \`agentbot serve\` with the Kubernetes
launcher and AGENTBOT_MAX_CONCURRENT=${TASKS}, against internal/kubetest (etcd,
kube-apiserver, the agent-sandbox controller, the stand-in kubelet serving real
pods/exec streams; agent-runner runs on this machine), ${TASKS} labeled-issue
webhooks from the fake GitHub at once, each agent printing a line a second for
${AGENT_SECONDS} s and then writing a file. The control plane, the git server and
the ${TASKS} agent-runners share the machine with the bot. ${today}, ${cores} cores
(${cpu_model}), load average at the end ${loadavg}.

| measure | value | target |
|---|---|---|
| tasks that did not end in a PR; claim failures; exec stream errors (re-attaches) | ${failed}; ${cfail}; ${errs} (${reatt}) | none (${v_err}) |
| bot peak RSS (VmHWM of the agentbot process) | ${rss} MB | < 300 MB (${v_rss}) |
| bot CPU over the run (process_cpu_seconds_total) | ${cpu} s | |
| claim → Ready (from before the create request), p50 / p99 / max of ${rn} | ${p50} / ${p99} / ${rmax} ms | p99 < 1 s (${v_p99}) |
| peak goroutines in the bot; peak watches on claims it holds | ${gor}; ${watches} | |
| last agent exit → last PR opened | ${tail_s} s | |
| first delivery → last PR opened | ${total_s} s | |

The task that ended last, by phase (seconds): ${last}.
<!-- bench-kube100:end -->
MD
)"

echo
echo "$section"
if [ "$DOC" != "-" ]; then
  mkdir -p "$(dirname "$DOC")"
  [ -f "$DOC" ] || printf '# Benchmarks\n' >"$DOC"
  tmp="$(mktemp)"
  printf '%s\n' "$section" >"$tmp.section"
  if grep -q '<!-- bench-kube100:start -->' "$DOC"; then
    awk -v repl="$tmp.section" '
      /<!-- bench-kube100:start -->/ { while ((getline l < repl) > 0) print l; skip = 1; next }
      /<!-- bench-kube100:end -->/ { skip = 0; next }
      !skip { print }' "$DOC" >"$tmp"
  else
    { cat "$DOC"; printf '\n%s\n' "$section"; } >"$tmp"
  fi
  mv "$tmp" "$DOC"
  rm -f "$tmp.section"
  echo "==> recorded in $DOC"
fi
