# portguard: the two commands of the quick start, and a few helpers.
#   sudo make demo   build, and show the guard closing a published port
#   sudo make test   unit, golden, kernel (netns) and end-to-end tests
#   sudo make deb    target/deb/portguard_<version>_<arch>.deb (debhelper)
#   sudo make bench  every benchmark, printing tables (docs/performance.md)
#   sudo make e2e ENGINE=29       the end-to-end suite against one engine (20|26|28|29),
#                                 one case (test file) at a time: CASES="legacy swarm"
#   sudo make test-engines        the end-to-end suite against 26, 28 and 29
#   sudo make test-kernels        Debian's 5.10, 6.1, 6.12 and a 7.x kernel under QEMU:
#                                 connections through each attack, per kernel and tier;
#                                 then Swarm's routing mesh on two nodes (MESH=0 skips)
.PHONY: demo test deps build bench deb e2e test-engines test-kernels

deps:
	./scripts/install-deps

build: deps
	cargo build --workspace --release

test: deps
	cargo test --workspace --no-fail-fast

# Engines other than the installed 20.10 are unpacked once, by
# ../shared/engines/prepare.sh, into target/engines/NN (see
# crates/portguard-testkit/src/engine.rs).
ENGINE ?= 20
ENGINES ?= 26 28 29

# One cargo run per case (a file in tests/e2e/tests), so that the output
# names engine and case (test names carry the property) and times each;
# every case runs even if one fails. `make e2e ENGINE=28 CASES="legacy swarm"`
# runs a few.
# package, systemd and firewalld boot their own Debian with its own Docker
# 20.10, and fleet_alerts tests the alert pipeline, not the engine (`make
# test` runs them), so other engines would only repeat them.
ENGINE_INDEPENDENT := package systemd firewalld fleet_alerts
CASES ?= $(filter-out $(ENGINE_INDEPENDENT),$(sort $(basename $(notdir $(wildcard tests/e2e/tests/*.rs)))))

e2e: deps
	@echo "== e2e suite on engine $(ENGINE) =="
	@failed=""; for c in $(CASES); do \
	  start=$$(date +%s); \
	  echo "== engine $(ENGINE), case $$c =="; \
	  PORTGUARD_ENGINE=$(ENGINE) cargo test -p portguard-e2e --test $$c --no-fail-fast || failed="$$failed $$c"; \
	  echo "== engine $(ENGINE), case $$c: $$(( $$(date +%s) - start )) s =="; \
	done; \
	[ -z "$$failed" ] || { echo "engine $(ENGINE): failed case(s):$$failed" >&2; exit 1; }

# Every engine runs even if one fails; the exit status says whether any did.
test-engines: deps
	@failed=""; for e in $(ENGINES); do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory e2e ENGINE=$$e || failed="$$failed $$e"; \
	  echo "== engine $$e: $$(( $$(date +%s) - start )) s =="; \
	done; \
	[ -z "$$failed" ] || { echo "e2e failed on engine(s):$$failed" >&2; exit 1; }

# The kernel matrix (tests/kernels, docs/compatibility.md "Kernels"): the
# release daemon in a QEMU guest per Debian kernel; the kernels are cached in
# /var/cache/portguard-tests/kernels. KERNELS="bullseye trixie" and
# TIERS="auto twin" narrow or widen it.
test-kernels: deps
	cargo build --release -p portguardd -p guardctl
	./scripts/test-kernels

demo: build
	./scripts/demo

# Every benchmark, one after the other, in release mode; each prints its
# tables (median and p99, ratios from one run) and the machine's load.
bench: deps
	cargo build --release -p portguardd -p guardctl
	cargo bench -p portguard-config --bench parse
	cargo bench -p portguard-nft --bench apply
	cargo bench -p portguard-nft --bench apply_vs_nft
	cargo bench -p portguard-nft --bench packet
	cargo bench -p portguard-nft --bench exposure
	cargo bench -p portguard-nft --bench docker

deb: deps
	./packaging/build-deb
