# portguard: the two commands of the quick start, and a few helpers.
#   sudo make demo   build, and show the guard closing a published port
#   sudo make test   unit, golden, kernel (netns) and end-to-end tests
#   sudo make bench  every benchmark, printing tables (docs/performance.md)
.PHONY: demo test deps build bench deb

deps:
	./scripts/install-deps

build: deps
	cargo build --workspace --release

test: deps
	cargo test --workspace --no-fail-fast

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

deb: deps
	./packaging/build-deb
