# The two commands: `make run` and `make test`. Both install what they need first.
PY := .venv/bin/python

.PHONY: help setup run test lint bench image

help:
	@echo "make run    start the agent on PORT (default 8080) with embedded defaults"
	@echo "make test   run the whole test suite against real PostgreSQL, Redis, S3, FUSE, runc"
	@echo "make lint   ruff"
	@echo "make bench  run the benchmarks under bench/ and print the table of targets (bench/summary.py)"
	@echo "make image  build ./Dockerfile into containers-storage (buildah; no Docker, no registry)"

setup:
	scripts/setup.sh

run: setup
	$(PY) manage.py serve

# The suite runs on TEST_WORKERS pytest-xdist processes: its tests mostly wait (S3, FUSE, agents,
# sandboxes), so more workers than the 2 vCPUs help (docs/performance.md, "The test suite's
# time"). `make test TEST_WORKERS=0` runs it in this one process.
TEST_WORKERS ?= 3

test:
	scripts/setup.sh --test
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

bench:
	scripts/setup.sh --test
	$(PY) bench/summary.py

image:
	scripts/setup.sh --image --system-only
	scripts/build-image.sh
