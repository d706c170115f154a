# ctstfm_qgis — every target sets itself up first (make setup is idempotent).
SHELL := /bin/bash
SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
PLUGIN := ctstfm_qgis
DIST := dist
PROFILE_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup test bench bench-accuracy package install demo train-default sample clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) scripts/bench.py

bench-accuracy: setup
	$(PY) scripts/bench_accuracy.py

package:
	$(SYSTEM_PYTHON) scripts/package.py --dist $(DIST)

# Copies the plugin into the QGIS profile and enables it (qgis_process writes the
# profile's QGIS3.ini). PROFILE_DIR=... installs into another profile folder.
install:
	$(SYSTEM_PYTHON) scripts/package.py --install "$(PROFILE_DIR)"
	@QGIS_CUSTOM_CONFIG_PATH="$$(dirname "$$(dirname "$(PROFILE_DIR)")")" /usr/bin/qgis_process.bin plugins enable $(PLUGIN) \
		>/dev/null 2>&1 || true  # exits 1 when already enabled; the profile says what happened
	@if grep -qs "^$(PLUGIN)=true" "$(PROFILE_DIR)/QGIS/QGIS3.ini"; then \
		echo "Enabled $(PLUGIN); restart QGIS if it is running."; \
	else \
		echo "Enable it in QGIS: Plugins > Manage and Install Plugins > Installed > CTSTFM."; \
	fi

demo: setup
	$(PY) scripts/demo.py

train-default: setup
	$(PY) scripts/train_default.py

sample: setup
	$(PY) scripts/make_sample.py

clean:
	rm -rf $(DIST) .pytest_cache build
