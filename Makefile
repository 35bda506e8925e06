# wxbroker — `make` lists the targets. Every target works on a fresh Debian machine
# with Go installed in /usr/local/go (`make deps` installs the rest).

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
FUZZTIME ?= 30s

# binary:package pairs that `make deps` installs when the binary is missing.
DEPS := redis-server:redis-server redis-sentinel:redis-sentinel redis-cli:redis-tools chromium:chromium chromedriver:chromium-driver node:nodejs

.DEFAULT_GOAL := help
.PHONY: help build run deps test test-race bench chaos lint fmt-check vet fuzz clean

help: ## list the targets
	@echo "Usage: make TARGET"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/wxbroker
	$(GO) build -o bin/wxbroker ./cmd/wxbroker

run: ## start everything in one process: embedded Redis, WeChat simulator, demo config (wxbroker dev)
	$(GO) run ./cmd/wxbroker dev

deps: ## install redis-server, redis-sentinel, redis-tools, chromium, chromium-driver, nodejs when missing (apt-get)
	@missing=""; \
	for d in $(DEPS); do command -v "$${d%%:*}" >/dev/null 2>&1 || missing="$$missing $${d#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "make deps: need root or sudo to install:$$missing" >&2; exit 1; fi; \
	echo "make deps: installing$$missing"; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

test: deps fmt-check vet ## deps, gofmt, go vet, every Go test under -race (fuzz seeds included), node tests
	$(GO) test -race -count=1 -timeout 30m ./...
	@if [ -f miniprogram/package.json ]; then echo "node --test (miniprogram)"; cd miniprogram && node --test; fi

test-race: test ## alias of test (the tests always run with -race)

bench: deps ## run every benchmark, one package at a time (DESIGN.md §9 targets; docs/BENCHMARKS.md)
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -timeout 20m ./...

CHAOS_RUN ?= .
chaos: deps build ## chaos suite (not in test): real Redis, Sentinel, Cluster, 3 brokers, faults; figures per scenario (docs/RELIABILITY.md)
	WXBROKER_BIN="$(CURDIR)/bin/wxbroker" $(GO) test -tags chaos -count=1 -v -p 1 -timeout 15m -run '$(CHAOS_RUN)' ./internal/chaos/

lint: fmt-check vet ## gofmt, go vet, and staticcheck when installed
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; \
	else echo "staticcheck not installed; skipped (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -w these files:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		dir="$$(dirname "$$f")"; \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
			echo "== $$t ($$dir)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s "./$${dir#./}"; \
		done; \
	done

clean: ## remove bin/
	rm -rf bin
