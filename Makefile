# Thin wrapper: install what is missing, build, run the default suite, run the tests.
# The real work lives in scripts/deps.sh, CMakeLists.txt and the tunebench CLI.
JOBS  ?= $(shell nproc)
BUILD ?= build
ASAN  ?= build-asan
OUT   ?= results/default

.PHONY: deps build run test test-asan bench integration clean

deps:
	bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

run: build
	bash scripts/run_default.sh $(BUILD) $(OUT)

# Whole suite in Release, then the core tests again under ASan + UBSan.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	$(MAKE) test-asan

test-asan: deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTB_SANITIZE=ON
	cmake --build $(ASAN) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN) --output-on-failure -j $(JOBS)

# Quality targets on the default model that take minutes (not part of `make test`).
integration: build
	OMP_NUM_THREADS=1 $(BUILD)/tunebench_integration

bench: build
	$(BUILD)/tunebench_bench --benchmark_counters_tabular=true

clean:
	rm -rf $(BUILD) $(ASAN)
