# Every target installs what it needs into a local virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install run test unit chromium screenshots smoke bench bench-http profile soak hostile vendor \
	lint clean
.DEFAULT_GOAL := help

## List the targets with what they do (the default: plain `make`).
help:
	@awk '/^## / { text = text (text ? "\n                 " : "") substr($$0, 4); next } \
		/^[a-z][a-z-]*:/ && text { printf "make %-11s %s\n", substr($$1, 1, length($$1) - 1), text } \
		{ text = "" }' $(firstword $(MAKEFILE_LIST))

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: setup.cfg setup.py app/version.py | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

## Create the virtual environment .venv and install the service into it (editable),
## with its command, .venv/bin/runner.
install: $(VENV)/.installed

## Serve the API at http://127.0.0.1:$(PORT) with auto-reload and the token dev-token.
run: install
	$(BIN)/runner token seed-dev
	@echo "Playground: http://127.0.0.1:$(PORT)/playground  (runs: http://127.0.0.1:$(PORT)/runs, token dev-token)"
	GUNICORN_RELOAD=1 PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## The whole suite: lint (style and which way imports run), unit and HTTP tests, then
## the curl smoke test on real gunicorn.
test: lint unit smoke

## The pytest suite alone (no lint, no smoke test).
unit: $(VENV)/.installed-test chromium
	$(BIN)/pytest

## Debian's chromium, for the pages' browser tests and screenshots: installed when missing
## and run as root (else the browser tests are skipped).
chromium:
	@[ -x /usr/bin/chromium ] || [ "$$(id -u)" != 0 ] \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium could not be installed: the browser tests will be skipped"

## Screenshots of the run page and the playground into docs/, of a real run in Debian's chromium.
screenshots: $(VENV)/.installed-test chromium
	$(BIN)/python -m tests.screenshots

## curl against a real gunicorn on a free port (part of `make test`).
smoke: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/smoke.sh

## The engine against Dask's threaded scheduler, per run.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.engine

## HTTP throughput and server CPU per run of a 5-node workflow on SQLite (plain and streamed)
## and on PostgreSQL (with the database's CPU), against a bare Flask endpoint, alternating
## rounds (needs wrk); then what a follower costs the run it follows (bench/follow.py).
## BENCH_ROUNDS, BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_BASELINE=<revision>.
bench-http: $(VENV)/.installed-test
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "bench-http needs wrk (Debian package wrk)"; exit 1; }
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.follow

## Where one run's CPU goes, in process: CPU per run, its share per component
## (deterministic profiler) and, under callgrind, instructions per run (installs valgrind
## as root when missing). PROFILE_RUNS (3000).
profile: $(VENV)/.installed-test
	@command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq valgrind >/dev/null; } \
		|| echo "valgrind is not installed: no instruction counts"
	$(BIN)/python -m bench.profile

## Soak: real gunicorn under a mixed load for SOAK_SECONDS (default 180), then the books
## are checked (not part of `make test`). SOAK_CONCURRENCY, WEB_CONCURRENCY also apply;
## SOAK_DATABASE_URL=postgresql://… (an empty database) soaks the PostgreSQL store.
soak: $(VENV)/.installed-test
	$(BIN)/python -m bench.soak

## Hostile requests against real gunicorn, each figure printed beside its limit (answer
## time, CPU after the answer, memory, bytes answered, stored and logged); tests/test_hostile.py
## asserts the same figures in `make test`. `python -m bench.hostile WORD…` runs some.
hostile: $(VENV)/.installed-test
	$(BIN)/python -m bench.hostile

## Rebuild app/static/vendor (the pages' libraries) from the npm registry with node and npm:
## the exact versions of frontend/package-lock.json, bundled by frontend/build.mjs.
vendor:
	cd frontend && npm ci --ignore-scripts --no-audit --no-fund && node build.mjs

## Style (ruff) and the import contracts of setup.cfg (lint-imports).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check app tests bench examples wsgi.py gunicorn.conf.py
	$(BIN)/lint-imports --no-cache --no-logo

## Remove .venv, var/ (the development store and logs) and build and test leftovers.
clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache .ruff_cache .hypothesis
