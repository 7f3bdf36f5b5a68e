# shmconf: `make demo` and `make test` do all the set-up on a fresh machine.
#
# Every install comes from uv.lock (every direct and transitive dependency,
# with hashes, for every promised Python), through a pinned uv that is
# bootstrapped from requirements-uv.txt (checked by hash). `make lock`
# refreshes the lock; `make test-latest` tries the newest releases that
# pyproject.toml allows, without the lock.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
LATEST := .venv-latest
#: The PyYAML release before merge keys changed meaning (6.0.4): the YAML
#: tests run on it too, so shmconf's results never depend on the release.
PYYAML_OLD := 6.0.3

# Use the interpreters on this machine; never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1
# shmconf's own venvs build the C speedups (hatch_build.py) or fail: the
# tests and benchmarks measure the C paths (the pure-Python ones: make unit-pure).
export SHMCONF_SPEEDUPS := require

.PHONY: all venv demo test lint typecheck unit unit-pure yaml-compat bench bench-quick bench-servers \
	fuzz soak lock test-latest test-matrix clean

all: test

$(UV): requirements-uv.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r requirements-uv.txt
	touch $@

# The project goes in editable; everything else exactly as locked.
$(STAMP): pyproject.toml uv.lock $(UV) hatch_build.py shmconf/_speedups.c
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --quiet --locked --python $(PYTHON) \
	  --extra dev --extra bench --reinstall-package shmconf
	touch $@

venv: $(STAMP)

# Resolve again to the newest releases the ranges allow (pyproject.toml
# keeps ranges: a library must not pin), and rewrite uv.lock.
lock: $(UV)
	$(UV) lock --upgrade

# The whole suite on the newest releases that pyproject.toml allows, in a
# venv of its own, without the lock: an upstream release that breaks shmconf
# shows here before users meet it. Not part of .ci/run.
test-latest: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(LATEST)
	VIRTUAL_ENV=$(LATEST) $(UV) pip install --quiet --refresh --upgrade -e '.[dev,bench]'
	VIRTUAL_ENV=$(LATEST) $(UV) pip list --format freeze 2>/dev/null | \
	  grep -iE '^(pyyaml|pydantic|pydantic-core|orjson|watchdog|filelock)=' | tr '\n' ' '; echo
	touch $(LATEST)/.installed
	$(MAKE) --no-print-directory VENV=$(LATEST) PYYAML_OLD= test

# The test suite on every promised Python found here (3.10 to 3.13), each in
# .venv-X.Y from the lock, then a table; a version that is not installed
# fails the run (MATRIX_MISSING=report only reports it).
MATRIX ?= 3.10 3.11 3.12 3.13
MATRIX_MISSING ?= fail
test-matrix: $(UV)
	VERSIONS="$(MATRIX)" MISSING=$(MATRIX_MISSING) UV=$(UV) .ci/test-matrix

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
	$(BIN)/ruff check shmconf tests bench examples hatch_build.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict shmconf

unit: $(STAMP)
	$(BIN)/python -m pytest -q

# The reader's tests once more on the Python paths that serve where the C
# speedups are not built (shmconf/_fastpath.py, shmconf/frozen.py).
PURE_TESTS := tests/test_reader.py tests/test_torn_reads.py tests/test_frozen.py \
	tests/test_speedups.py tests/test_callbacks.py tests/test_current.py tests/test_rollout.py
unit-pure: $(STAMP)
	@echo "The reader's tests on the pure-Python paths (SHMCONF_SPEEDUPS=0):"
	SHMCONF_SPEEDUPS=0 $(BIN)/python -m pytest -q -p no:cacheprovider $(PURE_TESTS)

# The YAML source tests once more on the older PyYAML, layered over the
# locked venv (skipped when PYYAML_OLD is empty, as in test-latest).
yaml-compat: $(STAMP)
	@if [ -n "$(PYYAML_OLD)" ]; then \
	  echo "YAML source tests on PyYAML $(PYYAML_OLD):"; \
	  UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) run --quiet --locked --no-sync \
	    --with 'PyYAML==$(PYYAML_OLD)' python -m pytest -q -p no:cacheprovider \
	    tests/test_sources_yaml.py tests/test_yaml_merge.py; fi

# The bench smoke run checks only that every measure completes and writes its
# report (bench/out/); it runs before pytest so that pytest's summary ends the log.
test: lint typecheck bench-quick yaml-compat unit-pure unit

bench: $(STAMP) bench-servers
	$(BIN)/python -m bench

bench-quick: $(STAMP)
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
	else echo "atheris has no wheel here: the coverage-guided run is skipped"; fi

soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes 10

clean:
	rm -rf $(VENV) $(LATEST) .venv-3.* $(TOOLS) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
