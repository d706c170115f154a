"""CTSTFM spatiotemporal fusion for QGIS: the plugin's entry point.

The fusion engine lives in the plain-Python package ``model_core``. In the
installed plugin it is copied inside this folder; in the repository it sits next
to it. Either way the folder that holds it goes on ``sys.path`` here, before any
algorithm imports it.
"""

import os
import sys

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


def _core_parent():
    for candidate in (PLUGIN_DIR, os.path.dirname(PLUGIN_DIR)):
        if os.path.isfile(os.path.join(candidate, "model_core", "__init__.py")):
            return candidate
    raise ImportError(
        "ctstfm_qgis: the model_core package is missing from the plugin folder "
        f"{PLUGIN_DIR}; reinstall the plugin from its zip."
    )


_parent = _core_parent()
if _parent not in sys.path:
    sys.path.insert(0, _parent)


def classFactory(iface):  # noqa: N802 (QGIS naming)
    """Called by QGIS desktop with its iface, and by qgis_process with None."""
    from .plugin import CtstfmPlugin

    return CtstfmPlugin(iface)
