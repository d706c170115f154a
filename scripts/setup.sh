#!/usr/bin/env bash
# Set up everything `make test`, `make demo` and `make bench` need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_PYTHON=/usr/bin/python3
TORCH_VERSION=2.13.0

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

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (with the system's qgis, osgeo and numpy)"
    "$SYSTEM_PYTHON" -m venv --system-site-packages .venv
fi

# Keep the system numpy that GDAL and QGIS were built against.
NUMPY_VERSION=$(.venv/bin/python -c "import numpy; print(numpy.__version__)")
printf 'numpy==%s\ntorch==%s\n' "$NUMPY_VERSION" "$TORCH_VERSION" > .venv/constraints.txt

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch==$TORCH_VERSION"
    # On this project's machines pip finds the CPU build of this exact version locally;
    # elsewhere pip picks the platform's default build.
    .venv/bin/pip install -q -c .venv/constraints.txt "torch==$TORCH_VERSION"
fi
.venv/bin/pip install -q -c .venv/constraints.txt -r requirements-dev.txt
echo "setup: ready ($(.venv/bin/python -c 'import torch, osgeo.gdal; print("torch", torch.__version__, "gdal", osgeo.gdal.__version__)'))"
