# Two commands for a fresh clone: `make demo` and `make test`.
# The environment: VENV=DIR if given (created when it does not exist); else the active virtual environment or conda
# env when its python already imports torch (your PyTorch build is kept); else .venv, created here. What is missing
# (torch only for a new .venv, then this package) is installed into it.
ifeq ($(origin VENV), undefined)
  ACTIVE := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
  ifneq ($(ACTIVE),)
    ifeq ($(shell "$(ACTIVE)/bin/python" -c "import torch" >/dev/null 2>&1 && echo yes),yes)
      VENV := $(ACTIVE)
    endif
  endif
endif
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_CONFIG ?= configs/synthetic_dml_csr_tiny.yaml
DEMO_DATA ?= data/synthetic
DEMO_RUN ?= runs/demo

.PHONY: venv demo test clean-demo

venv:
	@bash scripts/setup_venv.sh $(VENV) dev

test: venv
	$(PY) -m pytest -q tests

demo:
	@bash scripts/setup_venv.sh $(VENV)
	@bash scripts/demo.sh $(PY) $(DEMO_CONFIG) $(DEMO_DATA) $(DEMO_RUN)

clean-demo:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
