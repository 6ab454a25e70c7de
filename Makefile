# supworker: two commands on a fresh Debian machine.
#   make run    install what is missing, start Redis/RabbitMQ/PostgreSQL, migrate, run everything
#   make test   the same set-up, then the test suite
# Both are idempotent: a second run only does what is not done yet.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
PYTEST_ARGS ?=
# Processes per Procfile line under `make run`: 2 media workers, 5 notification workers.
CONCURRENCY ?= media=2,notifications=5

.PHONY: run test services services-down services-status migrate admin bench lint check clean venv audit

venv: $(STAMP)

$(STAMP): requirements.txt
	@scripts/ensure_python.sh "$(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
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
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: admin
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -c $(CONCURRENCY)

bench: migrate
	@scripts/ensure_packages.sh vipsthumbnail=libvips-tools ffmpeg=ffmpeg smtp-sink=postfix
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: venv
	$(BIN)/python manage.py check

# Known vulnerabilities of exactly what requirements.txt pins (every package, transitive ones
# too, is pinned there: no resolution needed, nothing installed). --strict: a package that could
# not be audited fails the target instead of passing as "no known vulnerabilities".
audit: venv
	$(BIN)/pip-audit --requirement requirements.txt --no-deps --strict --progress-spinner off

clean: services-down
	rm -rf var logs test-output
