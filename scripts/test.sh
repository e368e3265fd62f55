#!/usr/bin/env bash
# The test command of the README and of .ci/run: installs what the tests need
# on a fresh machine (Debian packages, Claude Code from npm, the Kubernetes test
# binaries built from the Go module proxy), then vets and runs every test with
# the race detector. Built tools are cached under $AGENTBOT_CACHE and reused.
#
# The real-node tests (AGENTBOT_REAL_NODE=1, the default here) run a one-node
# Kubernetes with containerd, runc and gVisor on this machine: they need root,
# and the images built from the Dockerfile (hack/images/build.sh). Set
# AGENTBOT_REAL_NODE=0 to leave them out on a machine where that cannot work.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENTBOT_CACHE="${AGENTBOT_CACHE:-$HOME/.cache/agentbot}"
export AGENTBOT_TESTENV_DIR="${AGENTBOT_TESTENV_DIR:-$AGENTBOT_CACHE/testenv}"
export AGENTBOT_TOOLS_DIR="${AGENTBOT_TOOLS_DIR:-$AGENTBOT_CACHE/tools}"
export AGENTBOT_REAL_NODE="${AGENTBOT_REAL_NODE:-1}"
CLAUDE_CODE_VERSION=2.1.330

step() { printf '\n==> %s (at %ss)\n' "$*" "$SECONDS"; }

need_pkgs=()
wanted=(git bubblewrap chromium runsc)
if [ "$AGENTBOT_REAL_NODE" = 1 ]; then
  # The real node: container runtime, CNI plugins, firewall; image builds;
  # patch for gVisor's build.
  wanted+=(containerd runc containernetworking-plugins iptables buildah debootstrap patch)
fi
for p in "${wanted[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "apt-get install ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

claude_dir="$AGENTBOT_TOOLS_DIR/claude-$CLAUDE_CODE_VERSION"
if [ ! -x "$claude_dir/node_modules/.bin/claude" ]; then
  step "npm install @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
  mkdir -p "$claude_dir"
  npm install --silent --no-audit --no-fund --prefix "$claude_dir" "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
fi
# Sandboxes run as an unprivileged uid that must walk to the CLI (bubblewrap
# opens its bind sources as that uid): a cache under a 0700 home is copied
# to a directory every uid may pass through.
walkable() { local d; d=$(realpath "$1"); while [ "$d" != / ]; do [ $(( 0$(stat -c %a "$d") & 1 )) = 1 ] || return 1; d=$(dirname "$d"); done; }
if ! walkable "$claude_dir"; then
  shared=/var/cache/agentbot-tools/claude-$CLAUDE_CODE_VERSION
  if [ ! -x "$shared/node_modules/.bin/claude" ]; then
    step "copy Claude Code to $shared (the sandbox's uid cannot walk to $claude_dir)"
    mkdir -p "$shared" && chmod 0755 /var/cache/agentbot-tools
    cp -a "$claude_dir/." "$shared/"
  fi
  claude_dir=$shared
fi
export AGENTBOT_CLAUDE_BIN="$claude_dir/node_modules/.bin/claude"

if [ -x hack/testenv/build.sh ]; then
  step "kube test environment (etcd, kube-apiserver, kube-controller-manager, agent-sandbox controller)"
  hack/testenv/build.sh
  export AGENTBOT_KUBE_TESTS=1
fi

if [ "$AGENTBOT_REAL_NODE" = 1 ]; then
  step "images from the Dockerfile (runner, agentbot) and the pause image, with buildah"
  images=$(hack/images/build.sh | tail -1)
  export "${images?}"
fi

# CI must run, not skip, the tests that need these tools.
export AGENTBOT_REQUIRE_CLAUDE=1 AGENTBOT_REQUIRE_BWRAP=1 AGENTBOT_REQUIRE_CHROMIUM=1 AGENTBOT_REQUIRE_RUNSC=1

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi

step "go vet ./..."
go vet ./...

step "CGO_ENABLED=0 go build ./cmd/agent-runner (static)"
CGO_ENABLED=0 go build -o /dev/null ./cmd/agent-runner

step "go test -race ./... (real node: AGENTBOT_REAL_NODE=$AGENTBOT_REAL_NODE)"
# The slowest packages first: go test runs two packages at a time on two
# cores, in the order given, and a slow one started late is the run's tail.
slow=(./e2e ./dispatch ./runner/local ./internal/kubetest ./github ./runner/kubernetes ./cmd/agentbot ./runner/agentrun)
go test -race -timeout 30m "${slow[@]}" ./...

step "fuzz briefly"
for target in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for f in $(grep -h '^func Fuzz' "$target"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    go test -run '^$' -fuzz "^$f\$" -fuzztime 10s "$target"
  done
done
