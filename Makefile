# ha-vip: one place for every command CI runs.
#
#   make deps    install what the tests need (Debian bookworm, as root)
#   make check   what CI checks: rustfmt, clippy (warnings denied), all tests,
#                package-check, systemd-check
#   make test    all tests only (except the systemd suite)
#   make systemd-check  the systemd suite: the .deb in booted containers (root)
#   make demo    the newcomer's demo
#   make build / make release
#   make deb / make rpm   the packages (cargo-deb, cargo-generate-rpm)
#   make package-check    build, install, inspect, lint and purge both (root)

SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the tests need. Add yours here, one line each, with why.
APT_PACKAGES := \
	iproute2 \
	procps \
	openssl \
	curl \
	ca-certificates \
	dpkg-dev \
	lintian \
	man-db \
	rpm \
	systemd \
	systemd-container \
	dbus \
	nftables
#   iproute2         ip netns / ip addr: the data-plane tests check the kernel with it
#   procps           pgrep/ps for tests that start and stop processes
#   openssl          throwaway CAs and certificates for TLS tests
#   curl             probing the test API server from scripts
#   ca-certificates  HTTPS for cargo and apt-get
#   systemd          systemd-analyze verify/security for tests/systemd_unit.rs
#   dpkg-dev         dpkg-shlibdeps: cargo-deb computes the .deb's Depends with it
#   lintian          package-check lints the .deb
#   man-db           package-check reads the installed ha-vip(8) with man
#   rpm              package-check inspects the .rpm (rpm -qp) and installs it
#                    into a scratch root
#   systemd-container  systemd-nspawn: systemd-check, the demo and the bench
#                    boot a real systemd per lab node (tests/systemd_nspawn.rs)
#   dbus             dbus-daemon: tests/sleep_logind.rs runs a private bus with
#                    a logind stand-in for the sleep inhibitor
#   nftables         nft: tests/dataplane_precise.rs lists the precise fence's
#                    tables with it and makes foreign ones (not used at run time)

# Packaging tools, installed by `make deps` when missing (about 1 and 3
# minutes of compiling on 2 cores).
CARGO_DEB_VERSION := 3.8.0
CARGO_GENERATE_RPM_VERSION := 0.21.1

# Where cargo builds (CARGO_TARGET_DIR if set), and what the packaging
# targets write there. Cargo.toml's package metadata names the generated
# files as target/release/gen-docs/..., which both tools map to this.
TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)
GEN_DOCS = $(TARGET_DIR)/release/gen-docs
VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
DEB = $(TARGET_DIR)/debian/ha-vip_$(VERSION)-1_$(shell dpkg --print-architecture).deb
RPM = $(TARGET_DIR)/generate-rpm/ha-vip-$(VERSION)-1.$(shell uname -m).rpm
# Reproducible dates in the man pages and the .rpm: the last commit's time.
# Only for the commands that stamp them: cc-rs (ring) rebuilds when it
# changes, so it must not reach cargo build.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)

# Test support that builds or fetches heavier prerequisites, run by `make deps`.
KUBE_APISERVER_SH := tests/support/kube-apiserver.sh

.PHONY: all deps check fmt-check clippy test build release docs deb rpm package-check systemd-check demo bench-failover kube-apiserver clean

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
	@# Pinned: the package metadata in Cargo.toml is written for these.
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb@$(CARGO_DEB_VERSION) --locked
	@command -v cargo-generate-rpm >/dev/null || $(CARGO) install cargo-generate-rpm@$(CARGO_GENERATE_RPM_VERSION) --locked
	@if [ -f $(KUBE_APISERVER_SH) ]; then \
		echo "== $(KUBE_APISERVER_SH) build"; \
		bash $(KUBE_APISERVER_SH) build; \
	fi

# package-check needs root (dpkg -i); it adds a release build (about 3
# minutes from scratch on 2 cores) and about 40 s of its own. systemd-check
# reuses that build's .deb.
check: fmt-check clippy test package-check systemd-check

fmt-check:
	$(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# The ci profile (.config/nextest.toml): no retries, no fail-fast, generous timeouts.
# The systemd suite needs the .deb: systemd-check runs it.
SYSTEMD_TESTS := binary(/^systemd_nspawn$$/)
# Holds the kernel's RTNL lock (one lock for every namespace) for seconds on
# purpose: run alone, after the rest, so no other test's timing feels it.
RTNL_TESTS := binary(/^dataplane_late$$/)
# Seeds of the simulation of the real daemon (src/daemon/sim): about 2
# minutes of one core for 3000 in debug.
HA_VIP_SIM_SEEDS ?= 3000
test:
	HA_VIP_SIM_SEEDS=$(HA_VIP_SIM_SEEDS) $(CARGO) nextest run --workspace --profile ci -E 'not ($(SYSTEMD_TESTS) | $(RTNL_TESTS))'
	$(CARGO) nextest run --workspace --profile ci -E '$(RTNL_TESTS)'

# The .deb under test in three booted systemd containers (systemd-nspawn) on
# the lab's node namespaces: systemctl, journalctl, dpkg -i, apt-get purge.
# Needs root and systemd-container (make deps). It fails, never skips, when
# the .deb is missing.
systemd-check: deb
	HAVIP_DEB=$(abspath $(DEB)) $(CARGO) nextest run --workspace --profile ci -E '$(SYSTEMD_TESTS)'

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# The failover demo: real kube-apiserver, three node namespaces each booting
# systemd with the .deb installed, systemctl/journalctl and a handover.
# Needs root, systemd-container and the cached kube-apiserver (make deps).
demo: kube-apiserver deb
	$(CARGO) build -q --example demo
	HAVIP_DEB=$(abspath $(DEB)) $(CARGO) run -q --example demo

# Every fault scenario RUNS times (default 5) and the idle footprint over
# IDLE seconds: prints the table reported on the issues.
RUNS ?= 5
IDLE ?= 60
# Once per profile (tests/common/lab/profile.rs: a config fragment merged
# into every node's config); one this ha-vip rejects is reported, skipped.
PROFILES ?= lifetime,precise
# Then the same scenarios under systemd (the .deb in booted containers).
bench-failover: kube-apiserver deb
	$(CARGO) build -q --release --bin ha-vip --example bench_failover
	HAVIP_DEB=$(abspath $(DEB)) $(CARGO) run -q --release --example bench_failover -- $(RUNS) $(IDLE) $(PROFILES)

kube-apiserver:
	@bash $(KUBE_APISERVER_SH) build >/dev/null

# Man pages and shell completions, generated from ha_vip::cli::Cli.
docs:
	rm -rf $(GEN_DOCS)
	$(CARGO) build -q --example gen-docs
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(TARGET_DIR)/debug/examples/gen-docs $(GEN_DOCS)
	gzip -9n $(GEN_DOCS)/man/*.8

deb: release docs
	$(CARGO) deb --no-build --output $(DEB)

rpm: release docs
	mkdir -p $(dir $(RPM))
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(CARGO) generate-rpm --target-dir $(TARGET_DIR) --output $(RPM)

# Installs both packages on this machine (as root), checks their files,
# modes, conffile and scriptlets, lints the .deb and purges them again.
package-check: deb rpm
	bash packaging/check-packages.sh $(DEB) $(RPM) $(VERSION)

clean:
	$(CARGO) clean
