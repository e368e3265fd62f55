#!/usr/bin/env bash
# Builds the images the real test node runs, without a container registry:
#
#   agentbot-runner and agentbot   both targets of the repository's Dockerfile,
#                                  unchanged, built with `buildah bud`
#   pause                          the pod sandbox image: hack/images/pause,
#                                  a static binary on an empty image
#
# The Dockerfile's base images are build arguments; here they point at local
# images bootstrapped from Debian's mirror (debootstrap) and from this
# machine's Go toolchain, instead of the public golang, debian and node images.
# Nothing comes from a registry except npm packages and Go modules, which the
# Dockerfile itself installs.
#
# Results are OCI archives in $AGENTBOT_CACHE/images, named by a hash of what
# went into them (the build context for the Dockerfile's targets, the base
# images' recipe for the bases), so a second run with nothing changed takes
# seconds. The last line of output is the environment the tests read:
#   AGENTBOT_IMAGES_DIR=...   (runner.tar, agentbot.tar, pause.tar, images.env)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${AGENTBOT_CACHE:-$HOME/.cache/agentbot}/images
DEBIAN_RELEASE=trixie
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"

log() { printf '%s images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# buildah with its own storage under the cache: the vfs driver (no overlay
# mounts on the host), chroot isolation and the host's network (no bridge or
# netns of buildah's own).
B() {
	buildah --storage-driver vfs --root "$CACHE/storage" --runroot "$CACHE/run" "$@"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentbot-images.XXXXXX")
ctrs=()
cleanup() {
	local c
	for c in "${ctrs[@]}"; do B rm "$c" >/dev/null 2>&1 || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

have() { B inspect --type image "$1" >/dev/null 2>&1; }

# new_ctr IMAGE: a working container from IMAGE, removed at exit.
new_ctr() {
	local c
	c=$(B from --pull-never --quiet "$1")
	ctrs+=("$c")
	echo "$c"
}

# recipe NAME ARGS...: a hash of a function's own text and its inputs, the
# cache key of what it builds.
recipe() { { declare -f "$1"; printf '%s\n' "${@:2}"; } | sha256sum | cut -c1-12; }

# The Debian base (the Dockerfile's debian:trixie-slim): a minbase
# debootstrap, apt lists and package caches removed as in the slim images.
debian_base() {
	local tag
	tag=localhost/agentbot-base/debian:$DEBIAN_RELEASE-$(recipe debian_base "$DEBIAN_RELEASE" "$DEBIAN_MIRROR")
	if have "$tag"; then echo "$tag"; return; fi
	log "debootstrap $DEBIAN_RELEASE from $DEBIAN_MIRROR"
	local t0=$SECONDS rootfs=$WORK/rootfs
	debootstrap --variant=minbase "$DEBIAN_RELEASE" "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
	tar -C "$rootfs" -cf "$WORK/rootfs.tar" .
	rm -rf "$rootfs"
	local c
	c=$(new_ctr scratch)
	B add "$c" "$WORK/rootfs.tar" / >/dev/null
	rm -f "$WORK/rootfs.tar"
	B config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$c"
	B commit --quiet --rm "$c" "$tag" >/dev/null
	log "debian base in $((SECONDS - t0))s"
	echo "$tag"
}

# The Go builder (the Dockerfile's golang image): the Debian base with this
# machine's Go toolchain where the golang image has it, and the same module
# proxy settings as this machine.
go_base() {
	local debian=$1 goroot version
	goroot=$(go env GOROOT)
	version=$(go env GOVERSION)
	local tag
	tag=localhost/agentbot-base/golang:$version-$DEBIAN_RELEASE-$(recipe go_base "$debian" "$(go env GOPROXY)")
	if have "$tag"; then echo "$tag"; return; fi
	log "go builder with $version"
	local t0=$SECONDS c
	c=$(new_ctr "$debian")
	B copy "$c" "$goroot" /usr/local/go >/dev/null
	B config \
		--env GOPATH=/go \
		--env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--env GOTOOLCHAIN=local \
		--env "GOPROXY=$(go env GOPROXY)" \
		--env "GOSUMDB=$(go env GOSUMDB)" \
		"$c"
	B commit --quiet --rm "$c" "$tag" >/dev/null
	log "go builder in $((SECONDS - t0))s"
	echo "$tag"
}

# The Node.js base (the Dockerfile's node image): the Debian base with
# Debian's nodejs and npm, and the unprivileged user node (uid 1000) the
# node images have.
node_base() {
	local debian=$1
	local tag
	tag=localhost/agentbot-base/node:$DEBIAN_RELEASE-$(recipe node_base "$debian")
	if have "$tag"; then echo "$tag"; return; fi
	log "node base"
	local t0=$SECONDS c
	c=$(new_ctr "$debian")
	B run --isolation chroot --network host "$c" -- sh -c '
		set -e
		apt-get update -qq
		# Hundreds of small node-* packages: without fsync per file
		# this takes a minute instead of a quarter of an hour on vfs.
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			-o Dpkg::Options::=--force-unsafe-io nodejs npm >/dev/null
		rm -rf /var/lib/apt/lists/*
		groupadd --gid 1000 node
		useradd --uid 1000 --gid node --shell /bin/bash --create-home node
	' >&2
	B commit --quiet --rm "$c" "$tag" >/dev/null
	log "node base in $((SECONDS - t0))s"
	echo "$tag"
}

# trusting IMAGE: IMAGE with the certificate authorities this machine
# trusts, for builds behind an egress proxy that re-signs TLS (the public
# base images know only the public CAs). Go reads the bundle, Node.js the
# extra certificates, and update-ca-certificates (which the Dockerfile's
# apt-get install ca-certificates runs) keeps the local ones.
trusting() {
	local image=$1 bundle=/etc/ssl/certs/ca-certificates.crt
	local tag
	tag=$image-ca-$(recipe trusting "$image" "$(cat "$bundle" /usr/local/share/ca-certificates/*.crt 2>/dev/null)")
	if have "$tag"; then echo "$tag"; return; fi
	local c
	c=$(new_ctr "$image")
	B run --isolation chroot --network host "$c" -- mkdir -p /etc/ssl/certs /usr/local/share/ca-certificates >&2
	B copy "$c" "$bundle" /etc/ssl/certs/ca-certificates.crt >/dev/null
	if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
		B copy "$c" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
	fi
	B config --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt "$c"
	B commit --quiet --rm "$c" "$tag" >/dev/null
	echo "$tag"
}

# context_hash is a hash of what goes into the images: the Dockerfile, the
# module files and the Go programs' sources with what they embed (what
# `git ls-files` sees, with uncommitted changes, less tests, docs and
# scripts), and the base images.
context_hash() {
	(
		cd "$ROOT"
		git ls-files -co --exclude-standard -z -- . \
			':!:*_test.go' ':!:*.md' ':!:docs/' ':!:e2e/' ':!:manifests/' ':!:scripts/' ':!:hack/' ':!:.ci/' ':!:**/testdata/**' |
			sort -z | xargs -0 sha256sum 2>/dev/null
		printf '%s\n' "$@"
	) | sha256sum | cut -c1-16
}

# bud TARGET TAG HASH ARGS...: builds a target of the Dockerfile and writes
# it to $CACHE/TARGET-HASH.tar.
bud() {
	local target=$1 tag=$2 hash=$3
	shift 3
	local out=$CACHE/$target-$hash.tar
	if [[ -f $out ]]; then echo "$out"; return; fi
	log "buildah bud --target $target"
	local t0=$SECONDS
	# No --layers: with vfs every cached step is a full copy of the root
	# filesystem, slower than running the step again; Go's build cache is a
	# cache mount and survives.
	B bud --quiet --pull-never --isolation chroot --network host \
		--target "$target" "$@" -t "$tag" -f "$ROOT/Dockerfile" "$ROOT" >&2
	# Uncompressed: the archive is read once, from local disk.
	B push --quiet --disable-compression "$tag" "oci-archive:$out.tmp:$tag" >&2
	mv "$out.tmp" "$out"
	log "$target in $((SECONDS - t0))s"
	echo "$out"
}

# pause_image builds hack/images/pause, static, onto an empty image.
pause_image() {
	local hash
	hash=$(recipe pause_image "$(cat "$ROOT"/hack/images/pause/*.go)" "$(go env GOVERSION)")
	local out=$CACHE/pause-$hash.tar tag=localhost/agentbot-pause:$hash
	if [[ -f $out ]]; then echo "$out"; return; fi
	log "pause image"
	(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$WORK/pause" ./hack/images/pause)
	local c
	c=$(new_ctr scratch)
	B copy "$c" "$WORK/pause" /pause >/dev/null
	B config --entrypoint '["/pause"]' --user 65535:65535 "$c"
	B commit --quiet --rm "$c" "$tag" >/dev/null
	B push --quiet "$tag" "oci-archive:$out.tmp:$tag" >&2
	mv "$out.tmp" "$out"
	echo "$out"
}

# prune KEEP...: removes the images and archives of earlier builds (vfs
# stores every layer as a full copy, about a gigabyte each); the layer cache
# of intermediate steps goes too once the storage passes 30 GB.
prune() {
	local keep=" $* " ref f
	for ref in $(B images --format '{{.Name}}:{{.Tag}}' | grep -E '^localhost/agentbot(-runner|-pause)?:' || true); do
		[[ $keep == *" $ref "* ]] || B rmi "$ref" >/dev/null 2>&1 || true
	done
	for f in "$CACHE"/*.tar; do
		[[ -e $f && $keep != *" $f "* ]] && rm -f "$f"
	done
	if (($(du -sk "$CACHE/storage" | cut -f1) > 30 * 1024 * 1024)); then
		log "pruning buildah's layer cache"
		B rmi --prune >/dev/null 2>&1 || true
	fi
}

start=$SECONDS
debian=$(debian_base)
golang=$(trusting "$(go_base "$debian")")
node=$(trusting "$(node_base "$debian")")
hash=$(context_hash "$debian" "$golang" "$node")
args=(--build-arg "GO_IMAGE=$golang" --build-arg "DEBIAN_IMAGE=$debian" --build-arg "NODE_IMAGE=$node")
runner=$(bud runner "localhost/agentbot-runner:$hash" "$hash" "${args[@]}")
agentbot=$(bud agentbot "localhost/agentbot:$hash" "$hash" "${args[@]}")
pause=$(pause_image)
pause_tag=localhost/agentbot-pause:$(basename "$pause" .tar | sed 's/^pause-//')
prune "localhost/agentbot-runner:$hash" "localhost/agentbot:$hash" "$pause_tag" "$runner" "$agentbot" "$pause"

# The stable names the tests use, and the image references inside.
dir=$CACHE/current
mkdir -p "$dir"
ln -sf "$runner" "$dir/runner.tar"
ln -sf "$agentbot" "$dir/agentbot.tar"
ln -sf "$pause" "$dir/pause.tar"
cat >"$dir/images.env" <<ENV
AGENTBOT_RUNNER_IMAGE=localhost/agentbot-runner:$hash
AGENTBOT_BOT_IMAGE=localhost/agentbot:$hash
AGENTBOT_PAUSE_IMAGE=$pause_tag
ENV
log "done in $((SECONDS - start))s"
echo "AGENTBOT_IMAGES_DIR=$dir"
