# `make demo` and `make test` need nothing installed but Python 3.11+: both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[embedded,train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/longform build --config configs/demo.toml
	$(BIN)/longform report
	$(BIN)/longform query "select kind, status, round(phi, 2) as phi, round(ci_low, 2) as ci_low, round(ci_high, 2) as ci_high, reason from length_fits where run_id = (select max_by(run_id, started_at) from runs)"

# Three workers on 2 cores, a test file each at a time (its module fixtures built once): much of the
# suite's time is waiting (Prefect's heartbeat window, stand-in servers' delays, processes starting),
# which a third worker fills. Files are handed out longest first (tests/conftest.py): xdist's own
# order, by number of tests, started the three-test lost-machines file last, and the workers' busy
# times differed by 90 s; in this order they end within 3 s of each other. Measured here (2026-12-04):
# 8.0 and 9.5 minutes in xdist's order, 8.0 in this one.
PYTEST := $(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/lint-imports
	$(PYTEST)

# The inner loop: everything but the tests marked slow (builds, training, Prefect workers).
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# Speed and cost targets, measured as ratios against a baseline in the same run (not part of `make test`).
bench: $(STAMP)
	$(BIN)/python benchmarks/engine_efficiency.py --scale --sharded
	$(BIN)/python benchmarks/fleet_routing.py
	$(BIN)/python benchmarks/embedded_throughput.py
	$(BIN)/python benchmarks/embedded_speed.py
	$(BIN)/python benchmarks/near_duplicates.py
	$(BIN)/python benchmarks/gateau_cost.py --samples 3
	$(BIN)/python benchmarks/viewer_pages.py
	$(BIN)/python benchmarks/length_fidelity.py
	$(BIN)/python benchmarks/table.py

clean:
	rm -rf $(VENV) datasets_out/*.duckdb* datasets_out/demo
