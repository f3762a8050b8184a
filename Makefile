# Two commands for a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/synthetic_dml_csr_tiny.yaml
DEMO_DATA ?= data/synthetic
DEMO_RUN ?= runs/demo

.PHONY: venv demo test clean-demo

venv:
	@bash scripts/setup_venv.sh $(VENV)

test: venv
	$(PY) -m pytest -q tests

demo: venv
	@bash scripts/demo.sh $(PY) $(DEMO_CONFIG) $(DEMO_DATA) $(DEMO_RUN)

clean-demo:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
