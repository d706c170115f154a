"""Where the bundled resources are.

In the repository ``resources/`` sits beside ``model_core/``; in the installed
plugin both are copied inside ``ctstfm_qgis/``, again side by side, so one rule
finds them in both places.
"""

from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
DEFAULT_MODEL = RESOURCES_DIR / "default_model.pt"
SAMPLE_DIR = RESOURCES_DIR / "sample"
