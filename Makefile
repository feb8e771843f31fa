# AusCAT Orthanc as code. `./bootstrap.sh` is the first command; `make test` the second.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
INVENTORY ?= inventories/simulation/hosts.yml
SCENARIOS ?= default upgrade
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv site test lint unit molecule reliability clean-venv

help:
	@echo "make site       roll out the stack described by INVENTORY (default: simulation on this host)"
	@echo "make test       lint + unit tests + Molecule default scenario"
	@echo "make lint       ruff, yamllint, ansible-lint"
	@echo "make unit       unit tests of the image layer and the test harness"
	@echo "make molecule   molecule test of each scenario in SCENARIOS ($(SCENARIOS))"
	@echo "make reliability  longer attacks on a deployed stack (default: the simulation stack on this host)"

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

molecule: venv
	set -e; for scenario in $(SCENARIOS); do $(BIN)/molecule test -s $$scenario; done

# Not part of `make test`: they load the stack for a minute or more.
reliability: venv
	ORTHANC_DICOM_PORT=$${ORTHANC_DICOM_PORT:-4242} $(BIN)/pytest tests/reliability

clean-venv:
	rm -rf $(VENV)
