# hypervisor.resize: `make demo` and `make test` work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
BED := tests/testbed/bed
COLLECTION_LINK := .build/collections/ansible_collections/hypervisor/resize
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help deps venv dev collection setup bed-up bed-down bed-status demo test unit integration lint docs \
	sanity ansible-units changelog awx-check molecule clean

help:
	@echo "make demo   set everything up and resize a real VM from one hypervisor to another"
	@echo "make test   set everything up, run the whole suite, tear the test bed down"
	@echo "make bed-up / bed-down / bed-status   the local test bed (hv1..hv3)"
	@echo "make unit / integration / lint / docs / sanity / changelog / awx-check / molecule   parts of the suite"

deps:
	bash tests/testbed/install-deps.sh

$(VENV)/.installed: requirements-controller.txt
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-controller.txt
	touch $@

venv: deps $(VENV)/.installed

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

dev: venv $(VENV)/.dev-installed

collection:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@test -L $(COLLECTION_LINK) || ln -sfn ../../../.. $(COLLECTION_LINK)

setup: venv collection

bed-up: setup
	$(BED) up

bed-down:
	$(BED) down

bed-status:
	$(BED) status

demo: setup
	bash scripts/demo.sh

unit: setup
	$(PY) -m pytest -q tests/unit

lint: dev collection
	$(VENV)/bin/ruff check plugins tests
	$(VENV)/bin/yamllint .
	$(VENV)/bin/ansible-lint
	$(VENV)/bin/mypy --check-untyped-defs --ignore-missing-imports --follow-imports=skip \
	  plugins/module_utils/_transfer/receiver.py plugins/module_utils/_policy.py

docs: setup
	@for m in plugins/modules/*.py; do n=$$(basename $$m .py); \
	  $(VENV)/bin/ansible-doc hypervisor.resize.$$n > /dev/null || { echo "ansible-doc failed for $$n"; exit 1; }; done
	@$(VENV)/bin/ansible-doc -t role hypervisor.resize.resize > /dev/null
	@echo "ansible-doc renders every module and the role"

# ansible-test sanity (all tests, no ignore file), offline: see tests/sanity/run.sh.
sanity: dev collection
	tests/sanity/run.sh

ansible-units: dev
	tests/sanity/units.sh

changelog: dev
	tests/sanity/changelog.sh

awx-check: dev
	$(PY) tests/sanity/check_awx.py
	d=$$(mktemp -d) && $(VENV)/bin/ansible-builder create -f extensions/awx/execution-environment.yml -c $$d \
	  --output-filename Containerfile >/dev/null && rm -rf $$d

# Molecule scenario extensions/molecule/default: brings the bed up, resizes a VM, checks, takes it down.
molecule: setup
	$(VENV)/bin/molecule test

integration: setup
	$(PY) -m pytest -q tests/integration

# The whole suite: lint, docs, unit, then integration on the real test bed (brought up and torn down),
# then the benchmarks at CI size (figures printed; a wrong copy or an overbooked host fails).
test: setup dev
	$(MAKE) --no-print-directory lint docs sanity ansible-units changelog awx-check molecule
	rc=0; $(PY) -m pytest -q -p no:cacheprovider tests/unit tests/integration || rc=$$?; \
	  if [ $$rc -eq 0 ]; then $(PY) benchmarks/run --size small || rc=$$?; fi; \
	  $(BED) down || rc=$$((rc ? rc : 1)); exit $$rc

clean: bed-down
	rm -rf .build .pytest_cache

# Benchmarks of issue #4 on the local test bed (brought up if needed, left up): see BENCHMARKS.md.
# bench-small is the CI size (a few minutes); bench is the full size (the figures in BENCHMARKS.md).
.PHONY: bench bench-small
bench: setup
	$(PY) benchmarks/run --size full

bench-small: setup
	$(PY) benchmarks/run --size small
