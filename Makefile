# StreamDB: every target creates or reuses the virtualenv in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint stress fuzz fuzz-atheris bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[test,interop,bench]'
	touch $@

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(TEST_STAMP)
	$(PY) -m pytest -q

lint: $(TEST_STAMP)
	$(PY) -m ruff check streamdb wal tests tools fuzz
	$(PY) -m mypy

# Every test, the slow sweeps included, with 2000 hypothesis examples per stateful test.
stress: $(TEST_STAMP)
	STREAMDB_STRESS=1 $(PY) -m pytest -q -m "slow or not slow" -o timeout=3600

fuzz: $(TEST_STAMP)
	$(PY) fuzz/fuzz_wal_recovery.py --seconds $${FUZZ_SECONDS:-60}
	$(PY) fuzz/fuzz_db_open.py --seconds $${FUZZ_SECONDS:-60}
	$(PY) fuzz/fuzz_readers.py --seconds $${FUZZ_SECONDS:-60}
	$(PY) fuzz/fuzz_framing.py --seconds $${FUZZ_SECONDS:-60}
	$(PY) fuzz/fuzz_arrow.py --seconds $${FUZZ_SECONDS:-60}

# The same harnesses, coverage-guided by atheris (libFuzzer), FUZZ_RUNS inputs each.
fuzz-atheris: $(TEST_STAMP)
	$(PIP) install --quiet -e '.[fuzz]'
	for h in wal_recovery db_open readers framing arrow; do \
		$(PY) fuzz/fuzz_$$h.py --atheris -- -runs=$${FUZZ_RUNS:-100000} || exit 1; \
	done

bench: $(STAMP)
	$(PIP) install --quiet -e '.[bench,interop]'
	$(PY) tools/bench_wal.py
	$(PY) tools/bench_store.py
	$(PY) tools/bench_concurrency.py
	$(PY) tools/bench_engine.py
	$(PY) tools/bench_transforms.py
	$(PY) tools/bench_framing.py
	$(PY) tools/bench_arrow.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
