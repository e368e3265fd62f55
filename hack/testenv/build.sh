#!/usr/bin/env bash
# Builds the Kubernetes test environment used by internal/kubetest from the Go
# module proxy: etcd, kube-apiserver, kube-controller-manager and the
# agent-sandbox controller; for the real node also kubelet, kube-scheduler,
# and gVisor's runsc with its containerd shim (containerd-shim-runsc-v1),
# patched with hack/testenv/gvisor/*.patch. Nothing is downloaded from
# anywhere else.
#
# The binaries land in ${AGENTBOT_TESTENV_DIR:-$HOME/.cache/agentbot/testenv}/bin.
# Each binary has a stamp file keyed by its version (for gVisor, the version
# and the patches' hash); a binary whose stamp matches is not rebuilt, so
# running this again is cheap (seconds).
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
# gVisor's "go" branch (buildable with the go tool) at a fixed commit; the
# module proxy does not resolve branch names here.
GVISOR_VERSION=v0.0.0-20260905035102-160fafc42237
HERE=$(cd "$(dirname "$0")" && pwd)

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

# kube_module prepares, once, the scratch module that builds kubernetes'
# commands, and prints its directory.
kube_module() {
	local m=$WORK/kubernetes
	if [[ -f $m/go.sum ]]; then
		echo "$m"
		return
	fi
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
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
		go mod tidy >&2
	) || exit 1
	echo "$m"
}

# build_kube NAME: builds k8s.io/kubernetes/cmd/NAME unless it is fresh.
# The version is stamped into the binary, as a release build does: the
# kubelet reports it to the API server, and the scheduler checks it.
build_kube() {
	local name=$1
	if fresh "$name" "$KUBERNETES_VERSION"; then
		log "$name $KUBERNETES_VERSION is up to date"
		return
	fi
	log "building $name $KUBERNETES_VERSION"
	local m t0=$SECONDS
	m=$(kube_module)
	(
		cd "$m"
		go build -trimpath -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION" \
			-o "$BIN/$name.tmp" "k8s.io/kubernetes/cmd/$name"
	)
	mv "$BIN/$name.tmp" "$BIN/$name"
	stamp "$name" "$KUBERNETES_VERSION"
	log "built $name in $((SECONDS - t0))s"
}

# build_gvisor builds runsc and containerd-shim-runsc-v1 from one gVisor
# commit, with our patches applied to a scratch copy of the module (the
# module cache is read-only and shared).
build_gvisor() {
	local patches=("$HERE"/gvisor/*.patch)
	local want
	want="$GVISOR_VERSION $(cat "${patches[@]}" | sha256sum | cut -c1-16)"
	if fresh runsc "$want" && fresh containerd-shim-runsc-v1 "$want"; then
		log "runsc and containerd-shim-runsc-v1 ($want) are up to date"
		return
	fi
	log "building runsc and containerd-shim-runsc-v1 $want"
	local t0=$SECONDS dir src=$WORK/gvisor
	dir=$(cd "$WORK" && go mod download -json "gvisor.dev/gvisor@$GVISOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -n $dir ]] || { log "cannot download gvisor.dev/gvisor@$GVISOR_VERSION"; exit 1; }
	cp -r "$dir" "$src"
	chmod -R u+w "$src"
	local p
	for p in "${patches[@]}"; do
		patch -d "$src" -p1 --forward --quiet <"$p" || { log "patch $p does not apply to gvisor $GVISOR_VERSION"; exit 1; }
	done
	(
		cd "$src"
		go build -trimpath -o "$BIN/containerd-shim-runsc-v1.tmp" ./shim
		go build -trimpath -o "$BIN/runsc.tmp" ./runsc
	)
	mv "$BIN/containerd-shim-runsc-v1.tmp" "$BIN/containerd-shim-runsc-v1"
	mv "$BIN/runsc.tmp" "$BIN/runsc"
	stamp containerd-shim-runsc-v1 "$want"
	stamp runsc "$want"
	log "built gvisor in $((SECONDS - t0))s"
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
build_kube kube-apiserver
build_kube kube-controller-manager
build_kube kube-scheduler
build_kube kubelet
build_gvisor
log "done in $(($(date +%s) - start))s; binaries in $BIN"
