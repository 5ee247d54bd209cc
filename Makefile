# Everything a newcomer needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The bench extra (rq, dramatiq: the peers benchmarks/peers.py measures against) is
# installed by `make bench` only; `make test` never needs it.
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/docrecovery demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[all,test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Keeps .docrecovery/redis and .docrecovery/spool: the embedded Redis's data and any
# failure events still waiting to be replayed.
clean:
	rm -rf $(VENV) .docrecovery/demo *.egg-info
