# AusCAT Orthanc as code. `./bootstrap.sh` is the first command; `make test` the second.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
INVENTORY ?= inventories/simulation/hosts.yml
SCENARIOS ?= default postgresql production upgrade reliability
# The long variant of the reliability scenario (make reliability).
LONG_CRASH_TRIALS ?= 30
LONG_LOAD_SECONDS ?= 600
# Options of `make bench`, e.g. BENCH_ARGS="--quick --backends sqlite" (python -m tests.bench --help).
BENCH_ARGS ?=
# Options of `make lifecycle-bench`, e.g. LIFECYCLE_BENCH_ARGS="--quick" (python -m tests.bench.lifecycle --help).
LIFECYCLE_BENCH_ARGS ?=
# Options of `make access-bench`, e.g. ACCESS_BENCH_ARGS="--quick" (python -m tests.bench.access --help).
ACCESS_BENCH_ARGS ?=
# Options of `make audit-report-bench`, e.g. AUDIT_REPORT_BENCH_ARGS="--sizes 10,100" (MB of audit trail).
AUDIT_REPORT_BENCH_ARGS ?=
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv site test lint unit molecule reliability bench lifecycle-bench access-bench audit-report-bench clean-venv

help:
	@echo "make site       roll out the stack described by INVENTORY (default: simulation on this host)"
	@echo "make test       lint + unit tests + Molecule scenarios ($(SCENARIOS))"
	@echo "make lint       ruff, yamllint, ansible-lint"
	@echo "make unit       unit tests of the image layer and the test harness"
	@echo "make molecule   molecule test of each scenario in SCENARIOS ($(SCENARIOS))"
	@echo "make reliability  the reliability scenario with $(LONG_CRASH_TRIALS) crash trials and $(LONG_LOAD_SECONDS) s of load"
	@echo "make bench      benchmark deployed vs stock vs bare Orthanc into build/bench (BENCH_ARGS=--quick: a smoke run)"
	@echo "make lifecycle-bench  backup, restore, inventory and upgrade cost against archive size into build/lifecycle-bench"
	@echo "make access-bench  REST ingest and reads with the HTTP access filter on vs off into build/access-bench"
	@echo "make audit-report-bench  the audit report's cost against the size of the trail into build/audit-report-bench"

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

venv: $(BIN)/.installed

site: venv
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/site.yml

test: lint unit molecule

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint

unit: venv
	$(BIN)/pytest tests/unit

# reset: Molecule remembers a scenario as prepared across runs; each run starts from scratch.
molecule: venv
	set -e; for scenario in $(SCENARIOS); do $(BIN)/molecule reset -s $$scenario; $(BIN)/molecule test -s $$scenario; done

# Not part of `make test`: the long variant of the reliability scenario (about 25 minutes).
reliability: venv
	AUSCAT_CRASH_TRIALS=$(LONG_CRASH_TRIALS) AUSCAT_LOAD_SECONDS=$(LONG_LOAD_SECONDS) \
	  $(BIN)/molecule test -s reliability

# Not part of `make test`: the benchmark (python -m tests.bench --help), about an hour with both
# index backends; it brings up and removes its own stacks and installs DCMTK when storescu is missing.
bench: venv
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# Not part of `make test`: backup, restore, inventory and upgrade against archive size, the replaced
# tar backup side by side (python -m tests.bench.lifecycle --help); its own stacks, removed at the end.
lifecycle-bench: venv
	$(BIN)/python -m tests.bench.lifecycle $(LIFECYCLE_BENCH_ARGS)

# Not part of `make test`: REST ingest and reads with the HTTP access filter on vs off, side by side
# (python -m tests.bench.access --help); its own two stacks, removed at the end.
access-bench: venv
	$(BIN)/python -m tests.bench.access $(ACCESS_BENCH_ARGS)

# Not part of `make test`: the audit report's questions timed over synthetic trails of growing size
# (python -m tests.bench.audit_report --help); no stack, a scratch directory removed at the end.
audit-report-bench: venv
	$(BIN)/python -m tests.bench.audit_report $(AUDIT_REPORT_BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
