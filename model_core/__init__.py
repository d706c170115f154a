"""CTSTFM model core: plain PyTorch, numpy and GDAL, no QGIS.

Everything the QGIS plugin does (fusion, training, assessment, simulation) lives
here so that it can be tested, benchmarked and scripted without QGIS. The
command line is ``python -m model_core --help``.
"""

__version__ = "0.1.0"
