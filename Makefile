# Two commands on a fresh machine: `make demo` (main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml requirements-lock.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements-lock.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Main job: every stage of the study on the synthetic phantom cohort with configs/demo.yaml (or ACDC with
# ACDC_ROOT=...); DEMO_ARGS="--config cpu" runs the full CPU study.
demo: $(STAMP)
	$(BIN)/cmrprior demo --out $(DEMO_OUT) $(if $(ACDC_ROOT),--data $(ACDC_ROOT),) $(DEMO_ARGS)

# The suite runs in one pytest worker per core, at most 4 (pytest-xdist; each worker holds torch and a few phantom
# studies in memory), a test file per worker so that its module fixtures are built once; TEST_WORKERS=0: one process
TEST_WORKERS ?= $(shell $(PY) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
