#!/usr/bin/env bash
# The README's main command (make demo): builds agentbot and agent-runner
# into bin/ and runs one task with `agentbot run --demo`: it creates a sample
# repository (./agentbot-demo, or DEMO_REPO) and runs agentbot's built-in
# demo agent on it through the same local launcher and agent-runner as the
# GitHub App — no GitHub, no model key. The result is a new branch in that
# repository. Extra arguments go to `agentbot run` (for instance
# --prompt "..." --agent claude to use Claude Code with ANTHROPIC_API_KEY).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-bin}"
[ -x "$BIN/agentbot" ] && [ -x "$BIN/agent-runner" ] || {
  mkdir -p "$BIN"
  go build -o "$BIN/agentbot" ./cmd/agentbot
  CGO_ENABLED=0 go build -o "$BIN/agent-runner" ./cmd/agent-runner
}
exec "$BIN/agentbot" run --demo --repo "${DEMO_REPO:-agentbot-demo}" "$@"
