# The two commands a newcomer needs: `make demo` and `make test`. Each installs what is
# missing, configures and builds. Ninja and ccache are used when present.
BUILD       ?= build
ASAN_BUILD  ?= build-asan
BENCH_BUILD ?= build-release
FUZZ_BUILD  ?= build-fuzz
TSAN_BUILD  ?= build-tsan
FUZZ_SECONDS ?= 60
FUZZERS     := config event captures profile
SOAK_TRIALS ?= 1000000
SOAK_MINUTES ?= 10
SOAK_SEED   ?= $(shell date +%s)
GENERATOR   := $(if $(shell command -v ninja 2>/dev/null),-G Ninja,)
CTEST_FLAGS := --output-on-failure -j 2 --timeout 600
# The one benign CAF report (cmake/ubsan.supp says which) is suppressed by name.
SAN_ENV     := UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/cmake/ubsan.supp \
               ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1

.PHONY: all deps build demo test test-normal test-asan build-asan test-tsan build-tsan bench fuzz soak \
        package clean format

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD)

demo: build
	./$(BUILD)/engine/vmitap demo

test: test-normal test-asan

test-normal: build
	ctest --test-dir $(BUILD) $(CTEST_FLAGS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DVMITAP_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD)

test-asan: build-asan
	$(SAN_ENV) ctest --test-dir $(ASAN_BUILD) $(CTEST_FLAGS) -LE no-sanitizer

# ThreadSanitizer over the tests whose threads meet without CAF's runtime. Debian's CAF is
# not instrumented: TSan cannot see its mailboxes' synchronisation and reports every message
# that crosses threads as a race (the sink tests and the relay's held-response tests: ~300
# such reports, all inside CAF or on a message's contents), so those suites are left out.
# What runs: the sim (guest threads, responders, faults), the Xen driver on the fake Xen (its
# ring and event channel), and the hot path and registry on CAF's deterministic scheduler.
# cmake/tsan.supp names the one place suppressed: Xen's ring macros.
TSAN_TESTS  := test_drivers test_xen test_actors
TSAN_ENV    := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/cmake/tsan.supp
build-tsan: deps
	@cmake -S . -B $(TSAN_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMITAP_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) --target $(TSAN_TESTS)

test-tsan: build-tsan
	$(TSAN_ENV) ./$(TSAN_BUILD)/tests/test_drivers --gtest_brief=1
	$(TSAN_ENV) ./$(TSAN_BUILD)/tests/test_xen --gtest_brief=1
	$(TSAN_ENV) ./$(TSAN_BUILD)/tests/test_actors --gtest_brief=1 \
	  --gtest_filter='-sink_test.*:path_with_handler.*'

# Rewrites every C++ file to the house style (.clang-format); make test checks it.
format:
	@find actors bench drivers engine examples tests \( -name '*.cpp' -o -name '*.hpp' \) \
	  -not -path '*/corpus/*' -print0 | xargs -0 clang-format -i

bench: deps
	@cmake -S . -B $(BENCH_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BENCH_BUILD) --target vmitap-bench
	./$(BENCH_BUILD)/bench/vmitap-bench --markdown BENCHMARKS.md

# libFuzzer, FUZZ_SECONDS per harness, from the seed corpus in tests/fuzz/corpus (new inputs
# go to $(FUZZ_BUILD)/corpus, the repository's corpus is only read). A crash fails the target
# and leaves its input as crash-* in the current directory.
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Debug -DVMITAP_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) --target $(addprefix fuzz_,$(FUZZERS))
	@for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$f; \
	  echo "fuzz_$$f: $(FUZZ_SECONDS) s"; \
	  $(SAN_ENV) ./$(FUZZ_BUILD)/tests/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 $(FUZZ_BUILD)/corpus/$$f tests/fuzz/corpus/$$f \
	    2>$(FUZZ_BUILD)/fuzz_$$f.log || { tail -60 $(FUZZ_BUILD)/fuzz_$$f.log; exit 1; }; \
	  grep -E "^stat::(number_of_executed_units|new_units_added)" $(FUZZ_BUILD)/fuzz_$$f.log; \
	done

# The fault campaign at length (tests/campaign): the trials `make test` runs, from a new seed
# (printed first; SOAK_SEED=S runs the same trials again), SOAK_MINUTES in all, half for each
# kind, or SOAK_TRIALS of each if that comes first. Slow and blocking handlers, records at the
# size limits and reloads are among them; each half prints its RSS slope and fails if memory
# grows. The first failing trial stops it and names its own seed.
soak: build
	VMITAP_CAMPAIGN_SEED=$(SOAK_SEED) VMITAP_CAMPAIGN_TRIALS=$(SOAK_TRIALS) \
	  VMITAP_CAMPAIGN_SECONDS=$$(( $(SOAK_MINUTES) * 30 )) \
	  ./$(BUILD)/tests/test_campaign --gtest_brief=1

# The Debian package, $(BUILD)/vmitap_<version>_<arch>.deb (README: "Installing as a service").
package: build
	@cmake --build $(BUILD) --target package

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)
