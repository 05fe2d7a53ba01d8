# dfs build, test and tooling. `make help` lists the targets.
GO        ?= go
BIN       ?= bin/dfs
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
GOBIN     ?= $(shell $(GO) env GOPATH)/bin

.PHONY: help build test test-short proto bench fuzz vet clean

help:
	@echo "make build   - build $(BIN) (static, CGO off)"
	@echo "make test    - all tests with -race (unit, in-process cluster, process tests)"
	@echo "make proto   - regenerate rpc/dfspb from rpc/dfs.proto"
	@echo "make bench   - Go benchmarks and 'dfs bench --dev'"
	@echo "make fuzz    - run each fuzz target for FUZZTIME (default 20s)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH="$(GOBIN):$$PATH" protoc -I rpc \
		--go_out=rpc/dfspb --go_opt=paths=source_relative \
		--go-grpc_out=rpc/dfspb --go-grpc_opt=paths=source_relative \
		rpc/dfs.proto
	PATH="$(GOBIN):$$PATH" protoc -I roles/coordinator/meta/metapb \
		--go_out=roles/coordinator/meta/metapb --go_opt=paths=source_relative \
		roles/coordinator/meta/metapb/meta.proto

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./chunkstream/ ./roles/...
	./$(BIN) bench --dev

FUZZTIME ?= 20s
# Each target runs alone: -fuzz takes one target per package run. The seed
# corpora live under each package's testdata/fuzz/<FuzzName>/.
FUZZ_TARGETS := \
	./rpc/:FuzzParsePath \
	./rpc/:FuzzParseChunkID \
	./rpc/:FuzzParseBytes \
	./chunkstream/:FuzzVerifier \
	./roles/datanode/:FuzzReadMeta
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
