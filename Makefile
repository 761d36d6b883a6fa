# Sluice — the targets people expect. `make run` and `make test` are the two a newcomer needs.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS    := ./...
# Modules of their own inside the repository: the plugin SDK, the example plugin built only on it, and the
# tool the plugin tests read NATS streams with (so Sluice's go.mod needs no NATS client).
SUBMODS := plugins/sdk plugins/examples/nats plugins/host/testdata/jetstream

.PHONY: build run test test-integration bench lint fuzz fuzz-short proto docs faults clean

build: ## a static binary in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice

run: ## the gateway on the embedded store with config.example.yaml
	$(GO) run ./cmd/sluice serve --config config.example.yaml

test: ## every test, with the race detector and shuffled order
	$(GO) test -race -shuffle=on -count=1 -timeout 30m $(PKGS)
	for m in $(SUBMODS); do (cd $$m && $(GO) test -race -shuffle=on -count=1 -timeout 10m ./...) || exit 1; done
	@# The per-key order test at full size (50 keys x 200 events); under -race it runs smaller.
	$(GO) test -count=1 -run 'TestPerKeyOrder' ./core/dispatch

test-integration: ## the tests that talk to real services (set their SLUICE_TEST_* variables first)
	$(GO) test -race -count=1 -run 'Integration|EndToEnd|Crash|Outage|Conformance' $(PKGS)

bench: ## micro-benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

lint: ## gofmt, go vet, and a tidy go.mod
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	for m in $(SUBMODS); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@# every go.mod must be tidy; go.sum lines that only dependencies' own tests need are reported, not failed on.
	GO=$(GO) .ci/tidy-check

# Every fuzz target of the modules, as package:Target:short (plugins/sdk is a module of its own: run from there).
# short is the target's budget in fuzz-short, a count of executions (about 3 s on a 2-core box): a duration-based
# -fuzztime can end a run with a spurious "context deadline exceeded" and no failing input (a race in Go's fuzz
# coordinator at the deadline, go.dev/issue/75804, fixed in Go 1.27), which a count never reaches.
FUZZ_TARGETS = ./core/match:FuzzCompile:30000x ./core/match:FuzzTopics:3000x ./core/match:FuzzTransformEvaluator:40000x \
	./core/config:FuzzParse:500x ./core/intake:FuzzDecode:8000x ./core/api:FuzzDecodeEvent:2000x \
	./core/api:FuzzCloudEvents:3000x ./sinks/webhook:FuzzVerifyStandard:30000x plugins/sdk:./template:FuzzTemplate:100000x

fuzz: ## each fuzz target for FUZZTIME (default 30s)
	@for t in $(FUZZ_TARGETS); do \
	  case $$t in \
	    plugins/sdk:*) dir=plugins/sdk; t=$${t#plugins/sdk:} ;; \
	    *) dir=. ;; \
	  esac; \
	  pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; short=$${rest#*:}; \
	  budget=$${FUZZTIME:-30s}; [ -n "$$FUZZ_SHORT" ] && budget=$$short; \
	  echo "== fuzz $$name ($$dir $$pkg, $$budget)"; \
	  (cd $$dir && $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$budget $$pkg) || exit 1; \
	done

fuzz-short: ## every fuzz target briefly (CI): a count of executions each, about 3s
	@FUZZ_SHORT=1 $(MAKE) --no-print-directory fuzz

faults: ## the full fault suite against the real binary (kill -9, outages, broker restart, full disk, ...); prints a table
	$(GO) test -count=1 -v -timeout 90m ./test/faults/... -faults.full

docs: ## regenerate generated docs and golden files
	$(GO) test ./core/config -run TestExampleGolden -update
	$(GO) test ./cmd/sluice -run TestSinksDocs -update

proto: ## regenerate plugins/sdk/internal/proto from sink.proto (protoc: apt-get install -y protobuf-compiler); PROTO_OUT=DIR writes elsewhere
proto: PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
proto: PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
proto: PROTO_OUT          ?= plugins/sdk/internal/proto
proto: PROTO_TOOLS        ?= $(CURDIR)/bin/proto-tools
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install -y protobuf-compiler" >&2; exit 1; }
	GOBIN=$(PROTO_TOOLS) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(PROTO_TOOLS) $(GO) install $(PROTOC_GEN_GO_GRPC)
	protoc -I plugins/sdk/internal/proto \
		--plugin=protoc-gen-go=$(PROTO_TOOLS)/protoc-gen-go --go_out=$(PROTO_OUT) --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc=$(PROTO_TOOLS)/protoc-gen-go-grpc --go-grpc_out=$(PROTO_OUT) --go-grpc_opt=paths=source_relative \
		plugins/sdk/internal/proto/sink.proto

clean:
	rm -rf bin data
