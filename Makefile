# portguard: the two commands of the quick start, and a few helpers.
#   sudo make demo   build, and show the guard closing a published port
#   sudo make test   unit, golden, kernel (netns) and end-to-end tests
#   sudo make deb    target/deb/portguard_<version>_<arch>.deb (debhelper)
.PHONY: demo test deps build bench deb

deps:
	./scripts/install-deps

build: deps
	cargo build --workspace --release

test: deps
	cargo test --workspace --no-fail-fast

demo: build
	./scripts/demo

bench: deps
	cargo bench --workspace

deb: deps
	./packaging/build-deb
