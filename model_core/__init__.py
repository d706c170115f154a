"""CTSTFM model core: plain PyTorch, numpy and GDAL, no QGIS.

Everything the QGIS plugin does (fusion, training, assessment, simulation) lives
here so that it can be tested, benchmarked and scripted without QGIS. The
command line is ``python -m model_core --help``.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

#: PyTorch reads this once, when torch is first imported (PyTorch's rule): "1" runs the operators
#: Apple's GPU (MPS) lacks on the CPU instead of failing. Set here, before any torch import, on macOS
#: only and only when the user has not chosen; ``device.device_note`` tells the log which it is.
MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"
if _sys.platform == "darwin" and "torch" not in _sys.modules:
    _os.environ.setdefault(MPS_FALLBACK, "1")
