#!/usr/bin/env bash
# Set up everything `make test`, `make demo` and `make bench` need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_PYTHON=/usr/bin/python3
TORCH_VERSION=2.13.0      # the wheel pip installs when the distribution has no recent enough torch
TORCH_MINIMUM=2.6         # oldest torch the suite is tested with (Debian 13's python3-torch)

if ! "$SYSTEM_PYTHON" -c "import qgis.core, osgeo.gdal" >/dev/null 2>&1 || [ ! -x /usr/bin/qgis_process.bin ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing QGIS and GDAL from the distribution's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv >/dev/null
    else
        echo "setup: QGIS 3.22+ with its Python bindings and GDAL are missing; install them (Debian/Ubuntu: sudo apt-get install qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv) and run make again." >&2
        exit 1
    fi
fi

# A distribution's python3-torch (Debian 13: 2.6) is used when it is recent enough: installed, or
# installable with apt-get as root. The venv sees it through --system-site-packages.
torch_recent_enough() {  # torch_recent_enough VERSION
    "$SYSTEM_PYTHON" -c "import sys; v = tuple(int(p) for p in sys.argv[1].split('+')[0].split('.')[:2]); \
m = tuple(int(p) for p in sys.argv[2].split('.')); sys.exit(0 if v >= m else 1)" "$1" "$TORCH_MINIMUM" 2>/dev/null
}
SYSTEM_TORCH=$("$SYSTEM_PYTHON" -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if [ -z "$SYSTEM_TORCH" ] && [ "$(id -u)" = 0 ] && command -v apt-cache >/dev/null 2>&1; then
    CANDIDATE=$(apt-cache policy python3-torch 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/[-+~].*//')
    if [ -n "$CANDIDATE" ] && [ "$CANDIDATE" != "(none)" ] && torch_recent_enough "$CANDIDATE"; then
        echo "setup: installing the distribution's python3-torch $CANDIDATE"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >/dev/null
        SYSTEM_TORCH=$("$SYSTEM_PYTHON" -c "import torch; print(torch.__version__)" 2>/dev/null || true)
    fi
fi
if [ -n "$SYSTEM_TORCH" ] && torch_recent_enough "$SYSTEM_TORCH"; then
    echo "setup: using the system's torch $SYSTEM_TORCH"
    TORCH_VERSION=${SYSTEM_TORCH%%+*}
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (with the system's qgis, osgeo and numpy)"
    "$SYSTEM_PYTHON" -m venv --system-site-packages .venv
fi

# Keep the system numpy that GDAL and QGIS were built against.
NUMPY_VERSION=$(.venv/bin/python -c "import numpy; print(numpy.__version__)")
printf 'numpy==%s\ntorch==%s\n' "$NUMPY_VERSION" "$TORCH_VERSION" > .venv/constraints.txt

VENV_TORCH=$(.venv/bin/python -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if [ -z "$VENV_TORCH" ] || ! torch_recent_enough "$VENV_TORCH"; then
    echo "setup: installing torch==$TORCH_VERSION${VENV_TORCH:+ (system torch $VENV_TORCH is older than $TORCH_MINIMUM)}"
    # On this project's machines pip finds the CPU build of this exact version locally;
    # elsewhere pip picks the platform's default build.
    .venv/bin/pip install -q -c .venv/constraints.txt "torch==$TORCH_VERSION"
fi
.venv/bin/pip install -q -c .venv/constraints.txt -r requirements-dev.txt
echo "setup: ready ($(.venv/bin/python -c 'import torch, osgeo.gdal; print("torch", torch.__version__, "gdal", osgeo.gdal.__version__)'))"
