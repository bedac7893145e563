# upcert: every target sets itself up on first use (Debian packages, .venv, device deps).
# `make test` is what CI runs (.ci/run); `make demo` is the end-to-end show.

PY      := .venv/bin/python
PYTEST  := .venv/bin/pytest
STAMP   := .venv/.upcert-setup
export UPCERT_HOME ?= $(CURDIR)/.state

.PHONY: setup test test-device test-host test-e2e lint layout mpy bench demo soak clean

$(STAMP) .build/deps/umqtt/simple.py: host_tools/requirements.txt pyproject.toml scripts/setup.sh
	@./scripts/setup.sh

setup: $(STAMP) .build/deps/umqtt/simple.py

# The suite in parallel (pytest-xdist): most e2e time is spent waiting on boards and brokers.
# One worker per core, at most 4 (JOBS=1 runs it in one process).
JOBS    ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ "$$n" -gt 4 ] && n=4; echo $$n)
XDIST   := $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist worksteal)

test: setup lint layout mpy
	$(PYTEST) -q -ra $(XDIST) tests

test-device: setup
	$(PYTEST) -q tests/device

test-host: setup
	$(PYTEST) -q tests/host

test-e2e: setup
	$(PYTEST) -q tests/e2e

lint: setup
	.venv/bin/ruff check host_tools tests bench firmware boards scripts

# Each part of the code, its size and what it imports; fails on an import circle or an import
# against the layers (scripts/layout.py says which).
layout: setup
	$(PY) scripts/layout.py

# Compile every device file with mpy-cross (syntax check for the ESP32 too) and report sizes.
mpy: setup
	$(PY) bench/mpy_size.py

bench: setup
	$(PY) bench/run_all.py

demo: setup
	$(PY) scripts/demo.py

# The field day (README "Reliability under faults"): emulated boards against the stand-in under
# random faults, then a report (table, JSON, timeline.png) in $(UPCERT_HOME)/soak/<seed>.
# BOARDS, MINUTES, FAULTS, SEED change the run: make soak BOARDS=2 MINUTES=2 SEED=1
soak: setup
	$(PY) -m upcert.cli soak --boards $(or $(BOARDS),5) --minutes $(or $(MINUTES),10) \
		--faults $(or $(FAULTS),all) $(if $(SEED),--seed $(SEED))

clean:
	-$(PY) -m upcert.cli cloud down >/dev/null 2>&1
	-for d in .state/boards/*/; do [ -d "$$d" ] && $(PY) -m upcert.cli board stop --state "$$d" >/dev/null 2>&1; done
	rm -rf .state .build
