# Fracture Review: the two commands are `make run` and `make test`; everything else is set-up they share.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
EXTRAS ?= cpu,dev,convert
# Real services for the end-to-end tests (CI starts them; see .ci/run).
E2E_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/fracture_review
E2E_BROKER_URL ?= redis://127.0.0.1:6379/15
# The unit tests run in one process per core (pytest-xdist), at most 4: each process loads TensorFlow, and
# the training tests already use every core. Tests are dealt out one by one in pytest-django's order (each
# process runs its transactional tests, which empty the database, after the others); a module marked
# xdist_group stays in one process, so its costly module fixtures run once.
UNIT_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))


.PHONY: dicom-tools
.PHONY: screenshots install run test test-unit test-e2e-services test-e2e-embedded lint typecheck services chromium clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

## Run the application: web, worker and beat supervised (restarted if they die), embedded SQLite and broker,
## debug off, a secret key made for this installation in var/; demo accounts created on the first start.
run: install
	$(PY) manage.py runapp --shadow-model models/lite0-cam-v1

## Run every test: lint, types, unit tests, then end-to-end against PostgreSQL + Redis and embedded.
test: install services chromium dicom-tools lint typecheck test-unit test-e2e-services test-e2e-embedded

## Start the local PostgreSQL and Redis the end-to-end tests talk to, if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

## Debian's Chromium for the browser tests (Playwright's own browser download is not used).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

## DICOM tools for the integration tests: dcmtk (storescu, dcmcjpeg), dicom3tools (dciodvfy) and the Orthanc
## PACS with its DICOMweb plug-in; Debian's packages, installed if missing.
dicom-tools:
	@test -x /usr/bin/storescu -a -x /usr/bin/dcmcjpeg -a -x /usr/bin/dciodvfy -a -x /usr/sbin/Orthanc \
		-a -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		dcmtk dicom3tools orthanc orthanc-dicomweb >/dev/null)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

typecheck:
	$(VENV)/bin/mypy config radiology worker classifier bench tests

test-unit:
	$(PYTEST) -m "not e2e and not browser" -q -n $(UNIT_WORKERS) --dist loadgroup

test-e2e-services:
	DATABASE_URL=$(E2E_DATABASE_URL) CELERY_BROKER_URL=$(E2E_BROKER_URL) $(PYTEST) -m "(e2e or browser) and not screenshots" -q

# The same pipeline on the embedded default: SQLite and the file broker, no servers.
test-e2e-embedded:
	env -u DATABASE_URL -u CELERY_BROKER_URL $(PYTEST) tests/e2e/test_pipeline.py tests/e2e/test_worker_child_kill.py -m e2e -q

## Retake the README's screenshots (real pages, real predictions from the shipped model).
screenshots: install chromium
	UI_SCREENSHOT_DIR=docs/screenshots $(PYTEST) tests/browser/test_screenshots.py -m screenshots -q

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
