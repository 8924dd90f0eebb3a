# Every target builds the virtual environment on first use, so a fresh
# machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: start start_dmd start_s3server mem_backend scrub test test_slow lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# dmd (metadata :9990 + data :9991) and one gateway (:8000), file backend.
start: $(STAMP)
	@set -e; $(PY) -m dmd & DMD=$$!; \
	trap 'kill $$DMD 2>/dev/null; wait $$DMD 2>/dev/null' EXIT INT TERM; \
	$(PY) -m gateway

start_dmd: $(STAMP)
	$(PY) -m dmd

start_s3server: $(STAMP)
	$(PY) -m gateway

mem_backend: $(STAMP)
	S3BACKEND=mem $(PY) -m gateway

# Check metadata against the data directory, online (run on the dmd host). Options: SCRUB_ARGS=...
# (--repair, --verify-data, --grace-seconds N, --stale-uploads-days N, --json FILE).
scrub: $(STAMP)
	$(PY) -m dmd.scrub $(SCRUB_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

test_slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

lint: $(STAMP)
	$(PY) -m ruff check --select F,E9 shared dmd gateway tests

bench: $(STAMP)
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) localData localMetadata
