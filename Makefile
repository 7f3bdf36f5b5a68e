# shmconf: `make demo` and `make test` do all the set-up on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: all venv demo test lint typecheck unit bench bench-quick bench-servers fuzz soak clean

all: test

# atheris (coverage-guided fuzzing) only where a wheel exists; its test skips elsewhere.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --only-binary atheris 'atheris>=2.3' || \
	  echo "atheris does not install here: the coverage-guided fuzz test is skipped"
	touch $@

venv: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Redis and etcd from Debian, for the side-by-side and fan-out benchmarks;
# a missing one is reported in docs/bench.md, never silently dropped.
bench-servers:
	@command -v redis-server >/dev/null && command -v etcd >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server etcd-server >/dev/null; } || \
	  echo "redis-server or etcd missing and not installable here; bench reports it"

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check shmconf tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict shmconf

unit: $(STAMP)
	$(BIN)/python -m pytest -q

# The bench smoke run checks only that every measure completes and writes its
# report (bench/out/); it runs before pytest so that pytest's summary ends the log.
test: lint typecheck bench-quick unit

bench: $(BENCH_STAMP) bench-servers
	$(BIN)/python -m bench

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

# The corruption properties of tests/test_corruption.py, run far longer:
# hypothesis, then atheris for FUZZ_SECONDS (crash inputs land in bench/out/fuzz/).
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	SHMCONF_FUZZ_EXAMPLES=5000 $(BIN)/python -m pytest -q --timeout=3600 tests/test_corruption.py
	mkdir -p bench/out/fuzz
	if $(BIN)/python -c 'import atheris' 2>/dev/null; then \
	  $(BIN)/python tests/fuzz_segment.py -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=bench/out/fuzz/ -print_final_stats=1; \
	else echo "atheris does not install here: the coverage-guided run is skipped"; fi

soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak --minutes 10

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
