# The whole test suite: formatting, lints, unit and integration tests, then the RPM end to end.
# Interop tests need the grid tools, the fts3 client and Rucio, the RPM test needs rpm and root:
# `.ci/run` installs them first. Without them those tests skip, loudly.
.PHONY: test build rpm rpm-tools test-rpm fuzz fuzz-seeds

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

# Fuzzing (cargo-fuzz, libFuzzer, nightly): every target of fuzz/ for FUZZ_TIME seconds each
# (or until FUZZ_RUNS executions, whichever comes first), starting from the committed seeds
# (fuzz/seeds/<target>) plus what earlier runs found (fuzz/corpus/<target>, not committed).
# Crashes land in fuzz/artifacts/<target>/: each becomes a fix and a file in
# fuzz/regressions/<target>/, which `cargo test` replays. Each target's log is
# fuzz/target/fuzz-<target>.log; its executions, speed and corpus size are printed.
# The test PKI (VOMS server included) lets the certificate targets get past the trust lookups.
# Runs at the lowest CPU priority: `make fuzz FUZZ_TIME=600`; the campaign of RELIABILITY.md:
# `make fuzz FUZZ_RUNS=1100000 FUZZ_TIME=7200` (one target: FUZZ_TARGETS=name). FUZZ_JOBS > 1
# runs parallel workers.
FUZZ_TIME ?= 60
FUZZ_RUNS ?= -1
FUZZ_JOBS ?= 1
FUZZ_PKI ?= fuzz/target/pki
FUZZ_TARGETS = submission certificate_chain certificate_pem voms_extension delegation_put \
	delegation_csr mock_url perf_markers gfal2_output config_file
FUZZ_PARALLEL = $(if $(filter-out 1,$(FUZZ_JOBS)),-jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS))

$(FUZZ_PKI)/usercert.pem:
	mkdir -p $(FUZZ_PKI)
	bash tests/pki/make-test-pki.sh $(FUZZ_PKI) >/dev/null

fuzz: $(FUZZ_PKI)/usercert.pem
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd fuzz && nice -n 19 cargo +nightly fuzz build -O
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t; \
	  echo "== fuzz $$t: $(FUZZ_TIME) s or $(FUZZ_RUNS) runs"; \
	  (cd fuzz && FTSD_FUZZ_PKI=$$(cd ../$(FUZZ_PKI) && pwd) nice -n 19 cargo +nightly fuzz run -O \
	    $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_TIME) -runs=$(FUZZ_RUNS) \
	    $(FUZZ_PARALLEL) -print_final_stats=1 >target/fuzz-$$t.log 2>&1) \
	    || { tail -n 60 fuzz/target/fuzz-$$t.log; echo "fuzz $$t: crash, see fuzz/artifacts/$$t"; exit 1; }; \
	  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" fuzz/target/fuzz-$$t.log; \
	  echo "corpus: $$(ls fuzz/corpus/$$t | wc -l) files, $$(du -sk --apparent-size fuzz/corpus/$$t | cut -f1) KiB of data"; \
	done

# Rewrite fuzz/seeds from the tests' inputs (see `fuzzing::tests::write_seed_corpora`).
fuzz-seeds: $(FUZZ_PKI)/usercert.pem
	FTSD_FUZZ_PKI=$$(cd $(FUZZ_PKI) && pwd) cargo test --lib fuzzing::tests::write_seed_corpora -- --ignored
