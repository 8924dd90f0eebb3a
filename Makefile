# Every target builds the virtual environment on first use, so a fresh
# machine needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: start start_dmd start_s3server start_lifecycle mem_backend scrub test test_slow test_pg start_pg test_rgw test_deploy soak lint bench venv clean

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

# The lifecycle worker (gateway/lifecycle/), beside `make start`: applies the buckets' lifecycle
# rules every lifecycle.intervalSeconds (LIFECYCLE_ARGS=--once: one pass).
start_lifecycle: $(STAMP)
	$(PY) -m gateway.lifecycle $(LIFECYCLE_ARGS)

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

# Issue 19: the S3 suites again with the gateway's metadata on PostgreSQL (S3_TEST_METADATA=postgres turns the
# file_gateway fixture into a gateway on a temp PostgreSQL cluster; data stays on the dmd). Tests that read the
# dmd's metadata directly (a Complete killed past its commit, bucket tags in the original's shape) are left out.
# Needs Debian's postgresql.
PG_SUITES := test_s3_objects test_versioning test_versioning_model test_listing_s3 test_delete_objects test_multipart \
	test_copy test_conditional_writes test_empty_bucket_delete test_conformance test_tagging test_object_attributes \
	test_list_buckets_paging test_acl test_object_lock test_lifecycle
test_pg: $(STAMP)
	S3_TEST_METADATA=postgres $(PY) -m pytest -q -n 2 --dist loadfile -k "not kill and not in_the_original_shape" \
		$(addprefix tests/integration/,$(addsuffix .py,$(PG_SUITES)))

# A local PostgreSQL (./localPostgres, port 5433, started if not running; stop it with
# `runuser -u postgres -- pg_ctl -D localPostgres/data stop`, or without runuser when not root), a dmd for the
# data, and a gateway whose metadata is on PostgreSQL.
start_pg: $(STAMP)
	@set -e; eval "$$($(PY) -m shared.pgcluster localPostgres 5433)"; export S3METADATA=postgres S3METADATA_URL; \
	echo "S3METADATA_URL=$$S3METADATA_URL"; \
	$(PY) -m dmd & DMD=$$!; \
	trap 'kill $$DMD 2>/dev/null; wait $$DMD 2>/dev/null' EXIT INT TERM; \
	$(PY) -m gateway

# Only the aws_s3 backend against Ceph RGW (also in test_slow): starts ../shared/tools/ceph-rgw/start.sh
# when nothing answers on :7480 (the first start installs Ceph, about a minute) and stops it after.
test_rgw: $(STAMP)
	$(PY) -m pytest -q -m slow tests/integration/test_aws_s3_rgw.py

# Deployment (deploy/README.md): hadolint, the compose and stack files validated, both images built
# on a stand-in base (no registry needed), Compose, the Swarm test stack, TLS, gateways on other hosts.
# Root; installs docker.io and mmdebstrap when missing. The tests run in a network namespace of their
# own (unshare -n) with their own dockerd, stopped by its PID at the end. A few minutes.
DEPLOY_STAMP := $(VENV)/.installed-deploy
$(DEPLOY_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,deploy]'
	touch $(DEPLOY_STAMP)

test_deploy: $(DEPLOY_STAMP)
	@set -e; tar=$$(tests/deploy/prepare.sh); \
	PYS3_HOST_NETNS=$$(readlink /proc/self/ns/net) PYS3_STANDIN_TAR=$$tar \
	unshare -n tests/deploy/netns-run.sh $(PY) -m pytest -q -rs tests/deploy

# Not in CI: two gateways under mixed load while the dmd is SIGKILLed and restarted (100 times by
# default), then the signed-request fuzzer (100,000 requests); prints the figures. Options: SOAK_ARGS=...
SOAK_ARGS ?= --kills 100 --gateways 2 --fuzz 100000
soak: $(STAMP)
	$(PY) -m tests.soak $(SOAK_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check --select F,E9 shared dmd gateway tests

bench: $(STAMP)
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) localData localMetadata
