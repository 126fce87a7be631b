# The whole test suite: formatting, lints, unit and integration tests, then the RPM end to end.
# Interop tests need the grid tools, the fts3 client and Rucio, the RPM test needs rpm and root:
# `.ci/run` installs them first. Without them those tests skip, loudly.
.PHONY: test build rpm rpm-tools test-rpm

test:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo test
	$(MAKE) test-rpm

build:
	cargo build --release

# target/rpm/ftsd-<version>-1.<arch>.rpm, from the release build.
rpm: build rpm-tools
	bash packaging/build-rpm.sh

# rpmbuild comes with Debian's `rpm` package, installed here when missing (Debian/Ubuntu, as
# root); elsewhere install it yourself (EL/Fedora: dnf install rpm-build).
rpm-tools:
	@command -v rpmbuild >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "== apt-get install rpm (for rpmbuild)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null; \
	  else \
	    echo "rpmbuild not found: apt-get install rpm (Debian/Ubuntu) or dnf install rpm-build (EL/Fedora)" >&2; \
	    exit 1; \
	  fi; }

# Build the RPM twice (two releases of one release binary), install it into a throwaway root,
# run the installed service, upgrade, remove: see packaging/test-rpm.sh.
test-rpm: build
	bash packaging/test-rpm.sh
