"""Where the bundled resources are.

In the repository ``resources/`` sits beside ``model_core/``; in the installed
plugin both are copied inside ``ctstfm_qgis/``, again side by side, so one rule
finds them in both places.
"""

import os
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
DEFAULT_MODEL = RESOURCES_DIR / "default_model.pt"
SAMPLE_DIR = RESOURCES_DIR / "sample"


def model_or_default(model_path=None):
    """The chosen model file, or the bundled default model when none was chosen (``None`` or empty)."""
    chosen = str(model_path or "").strip()
    if chosen:
        return chosen
    if os.path.isfile(str(DEFAULT_MODEL)):
        return str(DEFAULT_MODEL)
    from .errors import CtstfmError

    raise CtstfmError(
        "No model file was chosen and this installation has no built-in model; pick a CTSTFM model file (.pt), "
        "or train one (python -m model_core train, or 'Train CTSTFM' in QGIS's Training group)."
    )
