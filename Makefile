# InferBench: `make bench HW=cpu` and `make test` do all set-up themselves.
SHELL := /bin/bash
comma := ,
PYTHON ?= python3
HW ?= cpu
# HW=gpu gets its own environment: torch's CUDA build (from TORCH_INDEX) plus the [gpu] extra,
# then a smoke check that the GPU stack imports (inferbench.tools.gpu_smoke; no GPU needed).
ifeq ($(HW),gpu)
VENV ?= .venv-gpu
EXTRAS ?= gpu,dev
else
VENV ?= .venv
EXTRAS ?= cpu,dev
endif
TORCH_INDEX ?= https://download.pytorch.org/whl/cu130
PY := $(VENV)/bin/python
ARGS ?=
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

BASE ?=
NEW ?=
RUN ?=

.PHONY: setup browser postgres valgrind bench report compare merge gate gate-baseline gate-trials baseline crosscheck peak history nightly check test lint clean

setup: $(STAMP)

# Re-install when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(if $(filter gpu,$(HW)),$(PY) -m pip install --quiet "torch==2.13.0" --index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -c "import inferbench, torch; print('inferbench', inferbench.__version__, 'torch', torch.__version__)"
	$(if $(filter gpu,$(HW)),$(PY) -m inferbench.tools.gpu_smoke)
	touch $@

# The report test drives Debian's chromium; install it when we can (root + apt), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "chromium not installed: the browser test will be skipped"

# The history tests also run against a real PostgreSQL server started from Debian's packages;
# install it when we can (root + apt), else those tests skip.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null 2>&1; } \
	  || echo "postgresql not installed: the PostgreSQL history tests will be skipped"

# `ab --instructions` counts with Valgrind's callgrind where the CPU's instruction counter is not
# exposed (most VMs); install Debian's valgrind when we can (root + apt), else the count is a note
# and its tests skip.
valgrind:
	@command -v valgrind >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null 2>&1; } \
	  || echo "valgrind not installed: instruction counts need perf events, and the callgrind test will be skipped"

bench: setup
	$(PY) -m inferbench run --profile $(HW) $(if $(filter cpu cpu-full,$(HW)),--peak measure) $(ARGS)

report: setup
	$(PY) -m inferbench report $(RUN)

compare: setup
	$(PY) -m inferbench compare $(BASE) $(NEW) $(ARGS)

# One run folder from shard run folders (SHARDS_DIRS="results/shard-*", OUT=results/merged).
SHARDS_DIRS ?=
OUT ?= results/merged
merge: setup
	$(PY) -m inferbench merge $(SHARDS_DIRS) --out $(OUT)


# The gate: `inferbench ab` on the gate profile, BASE (default: the merge base with main) and the
# head (HEAD_SRC, a source folder; default: the working tree) interleaved in one job. Exit 0 = no
# regression, 1 = regression, 2 = usage, 3 = undecided, 4 = internal error. make itself exits 2 on
# any failure, so the code is also written to results/gate-$(HW)/exit-code for CI to read.
# CI runs this Makefile from the base commit's checkout with HEAD_SRC=the pull request's checkout
# (.github/workflows/perf.yml): the harness, its verdict and the gate profile (read from the
# base's tree) are the base's, and the head is only the code measured; HEAD_PYTHON runs it with
# the head's own packages when its dependency list differs.
# Calibration: each cell's noise on this runner, what the run can decide (printed up front and
# in compare.md), and the statistic each cell gates on (GATE_ON=auto: each process's fastest
# call, or p50 where the calibration shows it clearly steadier; GATE_ON=min or p50 fixes it). Read from CALIBRATION when that
# file is of this machine class, profile and cells; else CALIBRATE A/A rounds of the base
# against itself are run first, inside the budget, and written there for the next gate; each
# gate writes it back with its own rounds' spread pooled in (README, "The gate"). CI keeps the
# file between jobs (perf.yml's cache).
# Each cell stops once decided; the rounds left go to the open cells, up to ROUNDS per cell and
# within BUDGET for the whole run (README, "Adaptive rounds").
# Each round runs PROCESSES workers per side (the sides alternating: A B B A A B), each side's
# pooled, forked from a parent that imported the engines (FORK=auto: fresh processes on both
# sides where a side's code cannot fork, said in the notes; FORK=no: always fresh). See README,
# "Processes per round" and "Forked workers".
# A cell passes when the upper end of its repeated CONFIDENCE interval is below 1 + the threshold:
# a cell exactly the threshold (5%) slower passes about (1 - CONFIDENCE) / 2 = 10% of the time,
# one 7.5% slower or more almost never; a regression still needs alpha (5%) over all cells. See
# README, "Two error rates".
# INSTRUCTIONS=auto also counts instructions per call (perf, else callgrind) and gates on the count
# at 1% (README, "Instructions per call"); off by default: under Valgrind the count takes minutes
# of the budget.
ROUNDS ?= 30
BUDGET ?= 10m
GATE_ON ?= auto
CALIBRATE ?= 4
CALIBRATION ?= results/calibration-$(HW).json
PROCESSES ?= 3
FORK ?= auto
CONFIDENCE ?= 0.8
INSTRUCTIONS ?= off
HEAD_SRC ?=
HEAD_PYTHON ?=
gate: setup $(if $(filter-out off,$(INSTRUCTIONS)),valgrind)
	rm -rf results/gate-$(HW)
	$(PY) -m inferbench ab --base $(or $(BASE),$(shell git merge-base HEAD main 2>/dev/null || git merge-base HEAD origin/main)) \
	  $(if $(HEAD_SRC),--head "$(HEAD_SRC)") $(if $(HEAD_PYTHON),--head-python "$(HEAD_PYTHON)") \
	  --profile gate-$(HW) --rounds $(ROUNDS) --budget $(BUDGET) --gate-on $(GATE_ON) \
	  --calibrate $(CALIBRATE) --calibration "$(CALIBRATION)" \
	  --processes $(PROCESSES) --fork-workers $(FORK) --confidence $(CONFIDENCE) \
	  --instructions $(INSTRUCTIONS) --out results/gate-$(HW) $(ARGS); \
	  code=$$?; mkdir -p results/gate-$(HW) && echo $$code > results/gate-$(HW)/exit-code; exit $$code

# For a dedicated, quiet runner only: the gate profile against a baseline committed from that
# same machine (refused, exit 2, when the CPU, engines, threads or settings differ).
gate-baseline: setup
	rm -rf results/gate-baseline-$(HW)
	$(PY) -m inferbench run --profile gate-$(HW) --run-id gate-baseline-$(HW) --no-report --no-progress
	$(PY) -m inferbench compare results/baselines/$(HW) results/gate-baseline-$(HW) $(ARGS)

# Refresh that baseline (run on the gate's own machine, then commit the folder).
baseline: setup
	rm -rf results/baselines/$(HW)
	$(PY) -m inferbench run --profile gate-$(HW) --run-id $(HW) --results-dir results/baselines --no-report --no-progress
	rm -rf results/baselines/$(HW)/logs results/baselines/$(HW)/work

# Series of every recorded cell (results/history.sqlite or $$INFERBENCH_HISTORY) and reports/history.html.
history: setup
	$(PY) -m inferbench history $(ARGS)

# The scheduled job after merge: run the gate profile, append it to the history, then exit 1 if
# the newest point of any cell starts a step for the worse (latency or throughput) or a cell
# that was ok is not. Fails closed: `history append` exits non-zero when the append fails (`run`
# would only warn), and --expect-run fails when tonight's run is not the newest in the history.
nightly: setup
	run=nightly-$$(date -u +%Y%m%dT%H%M%SZ); \
	$(PY) -m inferbench run --profile gate-$(HW) --run-id $$run --no-history --no-report --no-progress \
	  && $(PY) -m inferbench history append results/$$run || exit $$?; \
	$(PY) -m inferbench history --profile gate-$(HW) --check --expect-run $$run; latency=$$?; \
	$(PY) -m inferbench history --profile gate-$(HW) --check --expect-run $$run --metric throughput --no-html; \
	tput=$$?; exit $$(( latency > tput ? latency : tput ))

# How often the gate is wrong on this machine: A/A runs (some with a CPU hog) and A/B runs
# against a branch that makes one backend slower, each run with the gate's settings above (ROUNDS,
# BUDGET, GATE_ON, CALIBRATE, PROCESSES, FORK); the runs share one calibration file in the
# trials' folder, as CI's cache shares CALIBRATION. See bench/tools/gate_trials.py.
gate-trials: setup
	$(PY) -m inferbench.tools.gate_trials --profile gate-$(HW) --rounds $(ROUNDS) --budget $(BUDGET) \
	  --gate-on $(GATE_ON) --calibrate $(CALIBRATE) --processes $(PROCESSES) --fork-workers $(FORK) \
	  --confidence $(CONFIDENCE) $(ARGS)

# Our numbers beside OpenVINO's benchmark_app and ORT's own IO-binding loop, same files/settings.
crosscheck: setup
	$(PY) -m inferbench.tools.crosscheck $(ARGS)

# This machine's FP32/BF16/INT8 matmul and memory-bandwidth ceilings (cached).
peak: setup
	$(PY) -m inferbench peak $(ARGS)

# mypy cannot follow the editable install's import hook: it reads a link tree that mirrors the
# installed layout (pyproject's [tool.mypy]).
define mypy
	$(PY) -m inferbench.layout build/typecheck
	$(PY) -m mypy
endef

# The quick check for day-to-day work, and CI's first step: lint, format, types and the tests
# that run no engine and spawn no worker (a few minutes on 2 vCPUs).
check: setup
	$(PY) -m ruff check bench backends models tests
	$(PY) -m ruff format --check bench backends models tests
	$(mypy)
	$(PY) -m pytest -m "not slow and not engine" $(ARGS)

test: setup browser postgres valgrind
	$(PY) -m pytest $(ARGS)

lint: setup
	$(PY) -m ruff check bench backends models tests
	$(PY) -m ruff format --check bench backends models tests
	$(VENV)/bin/zizmor --offline .github/workflows/
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(mypy)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
