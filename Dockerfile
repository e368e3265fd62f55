# syntax=docker/dockerfile:1
#
# Two images from one build:
#   docker build --target agentbot -t REGISTRY/agentbot:TAG .
#   docker build --target runner   -t REGISTRY/agentbot-runner:TAG .
# The runner image is what manifests/base/sandboxtemplate.yaml runs; add
# --build-arg INSTALL_CODEX=true to include the Codex CLI as well.

ARG GO_VERSION=1.26
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=trixie
# The base images: by default the public ones. hack/images/build.sh points
# them at images it bootstraps locally, for CI without a registry.
ARG GO_IMAGE=golang:${GO_VERSION}-${DEBIAN_RELEASE}
ARG DEBIAN_IMAGE=debian:${DEBIAN_RELEASE}-slim
ARG NODE_IMAGE=node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim

# ---- build: both Go programs, static --------------------------------------
FROM ${GO_IMAGE} AS build
WORKDIR /src
# The module and build caches live where the cache mounts are, whatever the
# base image's GOPATH (the golang images use /go).
ENV CGO_ENABLED=0 GOFLAGS=-trimpath GOMODCACHE=/go/pkg/mod GOCACHE=/root/.cache/go-build
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags='-s -w' -o /out/agentbot ./cmd/agentbot && \
    go build -ldflags='-s -w' -o /out/agent-runner ./cmd/agent-runner

# ---- agentbot: the service ----------------------------------------------------
# Not distroless: the bot pushes verified bundles with git itself, so the
# image carries git (and CA certificates for GitHub), nothing else.
FROM ${DEBIAN_IMAGE} AS agentbot
RUN apt-get update && \
    apt-get install -y --no-install-recommends git ca-certificates && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agentbot
COPY --from=build /out/agentbot /usr/local/bin/agentbot
# The root filesystem is read-only in manifests/base; git needs a HOME.
ENV HOME=/tmp AGENTBOT_DATA_DIR=/data
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/agentbot"]
CMD ["serve"]

# ---- runner: the sandbox image --------------------------------------------------
# agent-runner, git, Node.js and the Claude Code CLI. No bubblewrap: on
# Kubernetes the sandbox is the pod (gVisor or Kata via the overlays).
FROM ${NODE_IMAGE} AS runner
ARG CLAUDE_CODE_VERSION=2.1.330
ARG INSTALL_CODEX=false
ARG CODEX_VERSION=latest
RUN apt-get update && \
    apt-get install -y --no-install-recommends git ca-certificates && \
    rm -rf /var/lib/apt/lists/* && \
    npm install --global --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" && \
    if [ "${INSTALL_CODEX}" = "true" ]; then \
        npm install --global --no-audit --no-fund "@openai/codex@${CODEX_VERSION}"; \
    fi && \
    npm cache clean --force && \
    mkdir -p /workspace && chown node:node /workspace
COPY --from=build /out/agent-runner /usr/local/bin/agent-runner
ENV AGENTBOT_WORKSPACE=/workspace HOME=/workspace/home
WORKDIR /workspace
# The node image's unprivileged user (uid 1000), as the SandboxTemplate expects.
USER 1000:1000
# Make HOME (on the workspace volume), then idle until agentbot execs
# agent-runner; exit promptly on SIGTERM.
CMD ["/bin/sh", "-c", "mkdir -p \"$HOME\"; trap 'exit 0' TERM INT; sleep infinity & wait"]
