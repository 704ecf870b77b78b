# ha-vip: one place for every command CI runs.
#
#   make deps    install what the tests need (Debian bookworm, as root)
#   make check   what CI checks: rustfmt, clippy (warnings denied), all tests
#   make test    all tests only
#   make demo    the newcomer's demo
#   make build / make release

SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the tests need. Add yours here, one line each, with why.
APT_PACKAGES := \
	iproute2 \
	procps \
	openssl \
	curl \
	ca-certificates
#   iproute2         ip netns / ip addr: the data-plane tests check the kernel with it
#   procps           pgrep/ps for tests that start and stop processes
#   openssl          throwaway CAs and certificates for TLS tests
#   curl             probing the test API server from scripts
#   ca-certificates  HTTPS for cargo and apt-get

# Test support that builds or fetches heavier prerequisites, run by `make deps`.
KUBE_APISERVER_SH := tests/support/kube-apiserver.sh

.PHONY: all deps check fmt-check clippy test build release demo bench-failover kube-apiserver clean

all: check

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "== apt-get install $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "== apt packages present: $(APT_PACKAGES)"; \
	fi
	@command -v cargo-nextest >/dev/null || $(CARGO) install cargo-nextest --locked
	@if [ -f $(KUBE_APISERVER_SH) ]; then \
		echo "== $(KUBE_APISERVER_SH) build"; \
		bash $(KUBE_APISERVER_SH) build; \
	fi

check: fmt-check clippy test

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The ci profile (.config/nextest.toml): no retries, no fail-fast, generous timeouts.
test:
	$(CARGO) nextest run --workspace --profile ci

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# The failover demo: real kube-apiserver, three node namespaces, a handover.
# Needs root (network namespaces) and the cached kube-apiserver (built once).
demo: kube-apiserver
	$(CARGO) build -q --bin ha-vip --example demo
	$(CARGO) run -q --example demo

# Every fault scenario RUNS times (default 5) and the idle footprint over
# IDLE seconds: prints the table reported on the issues.
RUNS ?= 5
IDLE ?= 60
bench-failover: kube-apiserver
	$(CARGO) build -q --release --bin ha-vip --example bench_failover
	$(CARGO) run -q --release --example bench_failover -- $(RUNS) $(IDLE)

kube-apiserver:
	@bash $(KUBE_APISERVER_SH) build >/dev/null

clean:
	$(CARGO) clean
