# `make run`: set up .venv and run the offline quickstart recipe. `make test`: set up and run the fast tests;
# `make test-slow`: the tests marked slow (but not the fuzz); `make mutants`: the mutation check (tools/mutants.py);
# `make fuzz`: the long schema-driven fuzz of recipes, overrides, run-directory files and the CLI (tests/test_fuzz.py);
# `make wheel-check`: build the wheel, install it alone into a fresh venv and run it (tools/check_wheel.sh).
PYTHON ?= python3
VENV ?= .venv
# torch/torchvision pinned to the versions this project is developed and tested with
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow fuzz mutants wheel-check clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# the quickstart's adapted pipeline and its source-only baseline, then both accuracies side by side and which to use
run: $(STAMP)
	$(BIN)/da-toolkit run recipes/quickstart_source_only.yaml --overwrite
	$(BIN)/da-toolkit run recipes/quickstart.yaml --overwrite
	$(BIN)/da-toolkit show runs/quickstart_source_only runs/quickstart

# the fast suite in TEST_WORKERS processes (pytest-xdist), a test file per process at a time (module fixtures run once)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal
	tools/check_wheel.sh $(BIN)/python

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow and not fuzz"

# 2,500 override lists, 150 of them as 3-iteration runs, 600 edited run-directory files, 500 command lines:
# 9 min on a shared 2-core machine (205 s of one thread's CPU); DA_TOOLKIT_FUZZ_SCALE=2 doubles every count
fuzz: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m fuzz tests/test_fuzz.py --hypothesis-show-statistics

# one-line domain bugs put into a copy of the checkout one at a time; the fast suite must fail for each
mutants: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python tools/mutants.py --jobs 2 --report tools/mutants-report.txt

# also run by `make test` (so by CI): about 30 s of CPU; tests/test_packaging.py checks what setup.py declares
wheel-check: $(STAMP)
	tools/check_wheel.sh $(BIN)/python

clean:
	rm -rf $(VENV) runs *.egg-info
