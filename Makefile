# The whole test suite: formatting, lints, unit and integration tests.
# Interop tests need the grid tools and the fts3 client: `.ci/run` installs them first.
.PHONY: test build rpm

test:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test

build:
	cargo build --release
