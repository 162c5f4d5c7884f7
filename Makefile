# Two commands matter: `make demo` and `make test`. Each sets up .venv on its own.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Ray 2.60 turns on token authentication for local clusters. The demo and the tests
# start their own private local cluster, so we choose explicitly: disabled for these
# throwaway clusters (see README, "Ray token authentication").
export RAY_AUTH_MODE ?= disabled
# Python may cache bytecode (and pytest its rewritten test modules) under __pycache__,
# which git ignores: a shell that sets PYTHONDONTWRITEBYTECODE made every test process
# and every Ray worker recompile, 3.5 s of each pytest process's start.
unexport PYTHONDONTWRITEBYTECODE
# `make bench BENCH_ARGS="--repeat 1 --only W1"` for a quick look; figures are medians.
BENCH_ARGS ?= --repeat 3

.PHONY: demo test unit lint bench bench-real bench-shards soak clean

# --no-compile: pip would compile every module of every package (Ray's thousands) to
# bytecode, 20 of its 49 s on the 2-core machine; Python compiles the ones imported on
# first import instead and caches them (a few seconds, once). The venv's own pip (every
# Python >= 3.10 ships one >= 21.3, which installs an editable pyproject package) is
# used as it is: upgrading it first cost a few more seconds of every fresh install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rayqueue.examples.demo

# Two groups: the multi-node tests start their own Ray clusters, so they run in
# processes of their own after everything else (one Ray per process). The main group
# runs in TEST_PROCS pytest-xdist processes, each with its own private local Ray shared
# by its tests. Three are faster on two cores than two (338 s at 91 % busy, against
# 373 s at 74 %). Under that load the priority test once failed (a worker starved of
# CPU confirmed a high's start to the queue well before its body began, and the other
# worker ran 40 lows meanwhile); a start is now confirmed right before execute().
# The multi-node tests mostly wait on nodes coming and going but each runs a whole
# cluster: two at once (MULTINODE_PROCS) take 3 minutes, and three were no faster.
# (Running the two groups side by side was tried: on 2 cores it saved about 2 of 21
# minutes, and the groups saw each other's clusters on the machine, which the attach
# test and a Ray job's agent did not survive.)
TEST_PROCS ?= 3
MULTINODE_PROCS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_PROCS) --dist worksteal -m "not multinode" --durations=25
	$(BIN)/python -m pytest -n $(MULTINODE_PROCS) --dist worksteal -m multinode --durations=10

# The quick loop while editing: the pure core only, 4 processes (many unit tests wait on
# files, sockets and child processes), the core's state machines at 120 examples each
# instead of make test's 500 (RAYQUEUE_PROPERTY_PROFILE=machine-ci for those).
unit: $(STAMP)
	RAYQUEUE_PROPERTY_PROFILE=$${RAYQUEUE_PROPERTY_PROFILE:-machine-quick} \
	  $(BIN)/python -m pytest -n 4 --dist worksteal tests/unit

lint: $(STAMP)
	$(BIN)/ruff check rayqueue tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m tests.typing.readme

bench: $(STAMP)
	$(BIN)/python -m bench.suite $(BENCH_ARGS)
	$(BIN)/python -m bench.core_throughput
	$(BIN)/python -m bench.storage_throughput
	$(BIN)/python -m bench.cli_latency

# The realistic family (issue 12): a Redis round trip per task, 2x1 / 2x4 / 2x8 slots,
# every enqueue style, memory, SQLite FULL and PostgreSQL (a throwaway local server unless
# RAYQUEUE_BENCH_POSTGRES names one), with Huey, Celery and plain Ray tasks in the
# same run (needs redis-server: apt-get install redis-server).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-compile -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-real: $(BENCH_STAMP)
	$(BIN)/python -m bench.real $(REAL_ARGS)

# The shard sweep (issue 18): drain by shard count, workers and producers scaled to the
# machine's cores; under 8 minutes anywhere (SWEEP_ARGS="--memory --shards 1,2,4,8,16").
bench-shards: $(STAMP)
	$(BIN)/python -m bench.shard_sweep $(SWEEP_ARGS)

# RELIABILITY scenario 28 in full: 10 minutes of chaos on a 3-node Ray (CI runs 30 s).
soak: $(STAMP)
	$(BIN)/python -m tests.multinode.chaos_main --seconds $(or $(SOAK_SECONDS),600)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
