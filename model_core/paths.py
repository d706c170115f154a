"""Where the bundled resources are.

In the repository ``resources/`` sits beside ``model_core/``; in the installed
plugin both are copied inside ``ctstfm_qgis/``, again side by side, so one rule
finds them in both places.
"""

import os
from pathlib import Path

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"
DEFAULT_MODEL = RESOURCES_DIR / "default_model.pt"
#: The embedded model's three-image form (fine T0, coarse T0, coarse T1; docs/default_model.md).
DEFAULT_MODEL_THREE_IMAGE = RESOURCES_DIR / "default_model_three_image.pt"
SAMPLE_DIR = RESOURCES_DIR / "sample"


def default_model(three_image=False):
    """The bundled model for the mode: its three-image form when the coarse image at T0 is used (and
    bundled), else the two-image one; ``None`` when this installation has neither."""
    for path in ((DEFAULT_MODEL_THREE_IMAGE, DEFAULT_MODEL) if three_image else (DEFAULT_MODEL,)):
        if os.path.isfile(str(path)):
            return str(path)
    return None


def is_bundled_model(path):
    """Whether ``path`` is one of the bundled model files (either form)."""
    for bundled in (DEFAULT_MODEL, DEFAULT_MODEL_THREE_IMAGE):
        try:
            if os.path.samefile(str(path), str(bundled)):
                return True
        except OSError:  # one of them does not exist
            continue
    return False


def model_or_default(model_path=None, three_image=False):
    """The chosen model file, or the bundled default model when none was chosen (``None`` or empty):
    the three-image one with ``three_image`` (a coarse image at T0 is given)."""
    chosen = str(model_path or "").strip()
    if chosen:
        return chosen
    bundled = default_model(three_image)
    if bundled:
        return bundled
    from .errors import CtstfmError

    raise CtstfmError(
        "No model file was chosen and this installation has no built-in model; pick a CTSTFM model file (.pt), "
        "or train one (python -m model_core train, or 'Train CTSTFM' in QGIS's Training group)."
    )
