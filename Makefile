# supworker: two commands on a fresh Debian machine.
#   make run    install what is missing, start Redis/RabbitMQ/PostgreSQL, migrate, run everything
#   make test   the same set-up, then the test suite
# Both are idempotent: a second run only does what is not done yet.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Dependencies are declared in pyproject.toml and locked, with hashes, in requirements/: runtime.txt
# (what the Docker image installs) and dev.txt (the same versions plus the development tools).
DEV_LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
# pip itself, at the dev lock's version, installed before the locks (see pyproject.toml's dev group).
PIP_LOCK := requirements/pip.txt
STAMP := $(VENV)/.installed-$(shell cat $(PIP_LOCK) $(DEV_LOCK) | sha1sum | cut -c1-12)
# The 20 slowest tests are listed at the end: `make test` must stay well under 20 minutes.
PYTEST_ARGS ?= --durations=20
# Test processes (pytest-xdist; an idle one takes tests queued for the other); worker gwN uses test
# slot N (tests/testenv.py).
# 2 on these 2 cores: the slow tests mostly wait on servers they start and stop. 0 runs in one process.
TEST_PROCESSES ?= 2
# Processes per Procfile line under `make run`: 2 media workers, 5 notification workers.
CONCURRENCY ?= media=2,notifications=5

.PHONY: run test test-pgbouncer services services-down services-status migrate admin bench lint check clean venv audit lock

venv: $(STAMP)

$(STAMP): $(PIP_LOCK) $(DEV_LOCK)
	@scripts/ensure_python.sh "$(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(PIP_LOCK)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(DEV_LOCK)
	@rm -f $(VENV)/.installed-* && touch $@

services:
	@scripts/services.sh up

services-down:
	@scripts/services.sh down

services-status:
	@scripts/services.sh status

migrate: venv services
	$(BIN)/python manage.py migrate --no-input

admin: migrate
	@$(BIN)/python manage.py ensure_admin

test: migrate
	@scripts/ensure_packages.sh chromium=chromium node=nodejs npm=npm
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist worksteal $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-pgbouncer

# The tests marked `pgbouncer` (cleanups and their lease, job records, the notification log, the
# consumer's dead letters, the time zone) again, through PgBouncer in transaction mode.
test-pgbouncer: migrate
	@scripts/services.sh up pgbouncer
	SUPWORKER_TEST_VIA_PGBOUNCER=1 $(BIN)/python -m pytest -m pgbouncer $(PYTEST_ARGS)

run: admin
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -c $(CONCURRENCY)

bench: migrate
	@scripts/ensure_packages.sh vipsthumbnail=libvips-tools ffmpeg=ffmpeg smtp-sink=postfix
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SUPWORKER_ENV_FILE=/dev/null $(BIN)/mypy

check: venv
	$(BIN)/python manage.py check

# Regenerate both locks after changing a pin in pyproject.toml. uv keeps every version a lock
# already holds unless pyproject.toml asks otherwise (LOCK_ARGS=--upgrade moves everything to the
# newest releases). The dev lock first; the runtime lock is constrained by it, so the image runs
# the versions the tests ran. The pip lock holds pip alone, at the dev lock's version.
LOCK_ARGS ?=
UV_COMPILE := $(BIN)/uv pip compile --quiet --generate-hashes --python $(BIN)/python \
	--custom-compile-command "make lock" $(LOCK_ARGS)
lock: venv
	$(UV_COMPILE) pyproject.toml --group dev --output-file $(DEV_LOCK)
	$(UV_COMPILE) pyproject.toml --constraint $(DEV_LOCK) --output-file $(RUNTIME_LOCK)
	echo pip | $(UV_COMPILE) - --constraint $(DEV_LOCK) --output-file $(PIP_LOCK)

# Known vulnerabilities of exactly what the dev lock pins: every package, transitive ones too,
# and a superset of the runtime lock at the same versions. Hashed pins: no resolution, nothing
# installed. --strict: a package that could not be audited fails the target instead of passing
# as "no known vulnerabilities".
audit: venv
	$(BIN)/pip-audit --requirement $(DEV_LOCK) --require-hashes --strict --progress-spinner off

clean: services-down
	rm -rf var logs test-output
