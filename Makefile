# dfs build, test and tooling. `make help` lists the targets.
GO        ?= go
BIN       ?= bin/dfs
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
DOCKER    ?= docker
IMAGE     ?= dfs:dev
# IMAGE_CONTEXT is the docker build context `make image` stages (see Dockerfile).
IMAGE_CONTEXT ?= bin/image
COMPOSE   ?= docker-compose -f deploy/compose.yaml -p dfs

.PHONY: help build test test-short proto bench fuzz vet clean image cluster-up cluster-down test-containers man

help:
	@echo "make build   - build $(BIN) (static, CGO off)"
	@echo "make test    - all tests with -race (unit, in-process cluster, process tests)"
	@echo "make proto   - regenerate rpc/dfspb from rpc/dfs.proto"
	@echo "make man     - write the man page docs/dfs.1 (dfs man)"
	@echo "make bench   - Go benchmarks and 'dfs bench --dev'"
	@echo "make fuzz    - run each fuzz target for FUZZTIME (default 20s)"
	@echo "make image   - build the container image $(IMAGE) from $(BIN) (FROM scratch, nothing pulled)"
	@echo "make cluster-up / cluster-down - start / remove the compose cluster (deploy/compose.yaml) and its volumes"
	@echo "make test-containers - the cluster test in containers (needs a Docker engine)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

man:
	$(GO) run . man > docs/dfs.1

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	# The S3 conformance suite skips under -race (it checks the protocol,
	# and the race detector makes its clients time out): run it without.
	$(GO) test -count=1 -timeout 10m -run TestConformance ./roles/s3gw/

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

# image builds the binary on the host, stages a build context holding only
# what the Dockerfile copies, and builds FROM scratch: no image is pulled.
image: build
	@test -n "$(IMAGE_CONTEXT)" || { echo "IMAGE_CONTEXT is empty"; exit 1; }
	rm -rf $(IMAGE_CONTEXT)/rootfs $(IMAGE_CONTEXT)/owned $(IMAGE_CONTEXT)/dfs
	mkdir -p $(IMAGE_CONTEXT)/rootfs/tmp $(IMAGE_CONTEXT)/owned/data
	chmod 1777 $(IMAGE_CONTEXT)/rootfs/tmp
	chmod 0750 $(IMAGE_CONTEXT)/owned/data
	cp -R deploy/image/rootfs/. $(IMAGE_CONTEXT)/rootfs/
	cp $(BIN) $(IMAGE_CONTEXT)/dfs
	$(DOCKER) build --build-arg VERSION=$(VERSION) -f Dockerfile -t $(IMAGE) $(IMAGE_CONTEXT)

# The compose cluster: a coordinator and 4 datanodes on a private network.
cluster-up: image
	DFS_IMAGE=$(IMAGE) $(COMPOSE) up -d

cluster-down:
	DFS_IMAGE=$(IMAGE) $(COMPOSE) down -v

# test-containers runs TestContainers (e2e/containers_test.go) against $(IMAGE):
# a coordinator and 5 datanodes as containers under kills and a partition.
# Without a Docker engine it builds nothing and the test skips, saying so.
test-containers:
	@if $(DOCKER) info >/dev/null 2>&1; then $(MAKE) --no-print-directory image; \
	else echo "test-containers: no Docker engine answers ('$(DOCKER) info' fails); TestContainers will skip"; fi
	DFS_TEST_CONTAINERS=1 DFS_TEST_IMAGE=$(IMAGE) $(GO) test -count=1 -timeout 15m -run '^TestContainers$$' -v ./e2e/

clean:
	rm -rf bin
