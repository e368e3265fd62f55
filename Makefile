# The README's two commands are `make demo` (the main job) and `make test`.
.PHONY: build demo test bench bench-intake bench-peer bench-e2e bench-kube bench-kube100 testenv

BIN ?= bin

build:
	mkdir -p $(BIN)
	go build -o $(BIN)/agentbot ./cmd/agentbot
	CGO_ENABLED=0 go build -o $(BIN)/agent-runner ./cmd/agent-runner

demo: build
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	go test -run '^$$' -bench . -benchmem ./webhook/ ./state/

bench-intake:
	scripts/bench-intake.sh

bench-peer:
	scripts/bench-peer.sh

bench-e2e:
	scripts/bench-e2e.sh

bench-kube100:
	scripts/bench-kube100.sh

testenv:
	hack/testenv/build.sh
