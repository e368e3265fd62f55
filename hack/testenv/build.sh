#!/usr/bin/env bash
# Builds the Kubernetes test environment used by internal/kubetest from the Go
# module proxy: etcd, kube-apiserver, kube-controller-manager and the
# agent-sandbox controller. Nothing is downloaded from anywhere else.
#
# The binaries land in ${AGENTBOT_TESTENV_DIR:-$HOME/.cache/agentbot/testenv}/bin.
# Each binary has a stamp file keyed by its version; a binary whose stamp
# matches is not rebuilt, so running this again is cheap (seconds).
#
# Why scratch modules: `go install` refuses etcd's and kubernetes' main
# packages because their go.mod files carry replace directives. A throwaway
# module that requires them (and, for kubernetes, maps every k8s.io staging
# module to its published v0.x version) builds them fine.
set -euo pipefail

ETCD_VERSION=v3.7.3
KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
AGENT_SANDBOX_VERSION=v0.5.6

DIR=${AGENTBOT_TESTENV_DIR:-$HOME/.cache/agentbot/testenv}
BIN=$DIR/bin
mkdir -p "$BIN"

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local

log() { printf '%s testenv: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# fresh NAME VERSION: true when bin/NAME exists and was built for VERSION.
fresh() {
	[[ -x $BIN/$1 && -f $BIN/$1.version && $(cat "$BIN/$1.version") == "$2" ]]
}

stamp() { printf '%s\n' "$2" >"$BIN/$1.version"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentbot-testenv.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

build_etcd() {
	if fresh etcd "$ETCD_VERSION"; then
		log "etcd $ETCD_VERSION is up to date"
		return
	fi
	log "building etcd $ETCD_VERSION"
	local m=$WORK/etcd
	mkdir -p "$m"
	(
		cd "$m"
		go mod init agentbot.local/testenv/etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
		go build -trimpath -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
	)
	mv "$BIN/etcd.tmp" "$BIN/etcd"
	stamp etcd "$ETCD_VERSION"
}

build_kubernetes() {
	if fresh kube-apiserver "$KUBERNETES_VERSION" && fresh kube-controller-manager "$KUBERNETES_VERSION"; then
		log "kube-apiserver and kube-controller-manager $KUBERNETES_VERSION are up to date"
		return
	fi
	log "building kube-apiserver and kube-controller-manager $KUBERNETES_VERSION"
	local m=$WORK/kubernetes
	mkdir -p "$m"
	(
		cd "$m"
		go mod init agentbot.local/testenv/kubernetes >/dev/null 2>&1
		# kubernetes' own go.mod replaces each staging module with a local
		# directory; map each to its published version instead.
		local kdir
		kdir=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -n $kdir ]] || { log "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
		{
			echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
			sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#replace \1 => \1 '"$STAGING_VERSION"'#p' "$kdir/go.mod"
		} >>go.mod
		grep -q '^replace k8s.io/api ' go.mod || { log "no staging replace lines found in $kdir/go.mod"; exit 1; }
		cat >tools.go <<'GO'
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
		go mod tidy
		go build -trimpath -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
		go build -trimpath -o "$BIN/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
	)
	mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
	mv "$BIN/kube-controller-manager.tmp" "$BIN/kube-controller-manager"
	stamp kube-apiserver "$KUBERNETES_VERSION"
	stamp kube-controller-manager "$KUBERNETES_VERSION"
}

build_agent_sandbox() {
	if fresh agent-sandbox-controller "$AGENT_SANDBOX_VERSION"; then
		log "agent-sandbox-controller $AGENT_SANDBOX_VERSION is up to date"
		return
	fi
	log "building agent-sandbox-controller $AGENT_SANDBOX_VERSION"
	local m=$WORK/agent-sandbox
	mkdir -p "$m"
	(
		cd "$m"
		go mod init agentbot.local/testenv/agentsandbox >/dev/null 2>&1
		go get "sigs.k8s.io/agent-sandbox/cmd/agent-sandbox-controller@$AGENT_SANDBOX_VERSION"
		go build -trimpath -o "$BIN/agent-sandbox-controller.tmp" sigs.k8s.io/agent-sandbox/cmd/agent-sandbox-controller
	)
	mv "$BIN/agent-sandbox-controller.tmp" "$BIN/agent-sandbox-controller"
	stamp agent-sandbox-controller "$AGENT_SANDBOX_VERSION"
}

start=$(date +%s)
build_etcd
build_agent_sandbox
build_kubernetes
log "done in $(($(date +%s) - start))s; binaries in $BIN"
