# wxbroker — `make` lists the targets. Every target works on a fresh Debian machine
# with Go installed in /usr/local/go (`make deps` installs the rest).

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
FUZZTIME ?= 30s

# golangci-lint is built from the Go module proxy into GOPATH/bin when missing or
# at another version (`make lint` installs it; .golangci.yml says what it checks).
GOLANGCI_VERSION := v2.15.0
GOLANGCI         := $(shell $(GO) env GOPATH)/bin/golangci-lint

# binary:package pairs that `make deps` installs when the binary is missing.
DEPS := redis-server:redis-server redis-sentinel:redis-sentinel redis-cli:redis-tools chromium:chromium chromedriver:chromium-driver node:nodejs curl:curl promtool:prometheus amtool:prometheus-alertmanager wrk:wrk

# The Prometheus rules and their promtool unit tests (docs/RUNBOOK.md), and
# the example Alertmanager configuration (amtool).
RULES        := deploy/prometheus/rules.yaml
RULES_TEST   := deploy/prometheus/rules_test.yaml
ALERTMANAGER := deploy/alertmanager/alertmanager.yaml

.DEFAULT_GOAL := help
.PHONY: help build run deps test test-race rules sdktest bench chaos lint lint-tools tidy-check fmt-check vet fuzz clean

help: ## list the targets
	@echo "Usage: make TARGET"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/wxbroker
	$(GO) build -o bin/wxbroker ./cmd/wxbroker

# ARGS are passed to wxbroker dev: make run ARGS='--listen 127.0.0.1:0 --public-listen 127.0.0.1:0'
run: ## start everything in one process: embedded Redis, WeChat simulator, demo config (wxbroker dev; flags in ARGS='...')
	$(GO) run ./cmd/wxbroker dev $(ARGS)

# The Debian packages prometheus (promtool, and the server the live alert
# test starts itself) and prometheus-alertmanager (amtool) would start their
# servers on install: a temporary policy-rc.d forbids starting services
# during the install, and the services are disabled afterwards.
deps: ## install redis-server, redis-sentinel, redis-tools, chromium, chromium-driver, nodejs, curl, prometheus (promtool), prometheus-alertmanager (amtool), wrk when missing (apt-get)
	@missing=""; \
	for d in $(DEPS); do command -v "$${d%%:*}" >/dev/null 2>&1 || missing="$$missing $${d#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "make deps: need root or sudo to install:$$missing" >&2; exit 1; fi; \
	echo "make deps: installing$$missing"; \
	policy=""; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' | $$sudo tee /usr/sbin/policy-rc.d >/dev/null && $$sudo chmod 755 /usr/sbin/policy-rc.d && policy=1; \
	fi; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
	if [ -n "$$policy" ]; then $$sudo rm -f /usr/sbin/policy-rc.d; fi; \
	case "$$missing" in *prometheus*) \
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
			$$sudo systemctl disable --now prometheus prometheus-alertmanager >/dev/null 2>&1 || true; fi;; \
	esac; \
	exit $$rc

test: deps lint tidy-check rules ## deps, lint (gofmt, go vet, golangci-lint), go.mod tidy, promtool rule checks and unit tests, amtool checks, every Go test under -race (fuzz seeds included), node tests
	$(GO) test -race -count=1 -timeout 30m ./...
	@if [ -f miniprogram/package.json ]; then echo "node --test (miniprogram)"; cd miniprogram && node --test; fi
	@$(MAKE) --no-print-directory sdktest

# sdktest/: the npm WeChat SDKs co-wechat-api and wechat-api, and the curl
# lines of docs/SDKS.md, driving a real `wxbroker dev`. npm ci runs only
# when node_modules does not match the committed package-lock.json (the
# registry is not asked otherwise; --prefer-offline uses npm's cache first).
sdktest: build
	@cd sdktest && if ! cmp -s package-lock.json node_modules/.wxbroker-lock 2>/dev/null; then \
		echo "npm ci (sdktest)"; npm ci --prefer-offline --no-audit --no-fund && cp package-lock.json node_modules/.wxbroker-lock; fi
	@echo "node --test (sdktest)"; cd sdktest && WXBROKER_BIN="$(CURDIR)/bin/wxbroker" node --test

test-race: test ## alias of test (the tests always run with -race)

rules: deps ## promtool check/test rules on deploy/prometheus, amtool check-config and routes test on deploy/alertmanager
	promtool check rules $(RULES)
	promtool test rules $(RULES_TEST)
	amtool check-config $(ALERTMANAGER)
	amtool config routes test --config.file=$(ALERTMANAGER) --verify.receivers=wxbroker-page alertname=WxbrokerInvalidCredentialFastBurn severity=critical job=wxbroker namespace=wx-prod wx_namespace=prod appid=wx04a7af67c8f47620
	amtool config routes test --config.file=$(ALERTMANAGER) --verify.receivers=wxbroker-ticket alertname=WxbrokerConfigError severity=critical job=wxbroker namespace=wx-prod wx_namespace=staging appid=wx04a7af67c8f47620
	amtool config routes test --config.file=$(ALERTMANAGER) --verify.receivers=wxbroker-page alertname=WxbrokerAuthorizersNeedReauthorization severity=critical job=wxbroker namespace=wx-prod wx_namespace=prod component_appid=wx5a3c1e9b7d2f4a6c appid=wx5a3c1e9b7d2f4a6c

bench: deps ## run every benchmark, one package at a time (targets and figures: docs/BENCHMARKS.md)
	$(GO) test -p 1 -run '^$$' -bench . -benchmem -timeout 20m ./...

CHAOS_RUN ?= .
chaos: deps build ## chaos suite (not in test): real Redis, Sentinel, Cluster, 3 brokers, faults; figures per scenario (docs/RELIABILITY.md)
	WXBROKER_BIN="$(CURDIR)/bin/wxbroker" $(GO) test -tags chaos -count=1 -v -p 1 -timeout 15m -run '$(CHAOS_RUN)' ./internal/chaos/

lint: fmt-check vet lint-tools ## gofmt, go vet, golangci-lint (.golangci.yml: errorlint, revive, godot, staticcheck, ...)
	$(GOLANGCI) run --allow-parallel-runners ./...

lint-tools:
	@if ! "$(GOLANGCI)" version 2>/dev/null | grep -q "version $(GOLANGCI_VERSION:v%=%) "; then \
		echo "make lint: installing golangci-lint $(GOLANGCI_VERSION) (a few minutes, once)"; \
		$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION); \
	fi

tidy-check: ## fail when go.mod/go.sum are not what `go mod tidy` makes them
	@diff="$$($(GO) mod tidy -diff)" || { echo "go.mod/go.sum are not tidy; run go mod tidy:"; echo "$$diff"; exit 1; }

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
