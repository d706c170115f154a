"""The small base every ctstfm algorithm stands on.

It gives each algorithm its group, help and icon, checks that PyTorch can be
imported before any work starts, reports progress and cancellation to QGIS
through :class:`FeedbackProgress`, and turns the core's
:class:`~model_core.errors.CtstfmError` into a ``QgsProcessingException`` the
user can read. Subclasses implement ``initAlgorithm`` and ``run``.
"""

import importlib
import platform

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from model_core.errors import Cancelled, CtstfmError
from model_core.paths import RESOURCES_DIR
from model_core.progress import Progress

GROUPS = {
    "fusion": "Fusion",
    "training": "Training",
    "assessment": "Assessment",
    "classical": "Classical fusion methods",
}


def torch_missing_message():
    """What to do when QGIS's Python has no PyTorch, for the user's system."""
    system = platform.system()
    if system == "Windows":
        how = (
            "open the OSGeo4W Shell that came with QGIS and run "
            "'python -m pip install torch' (see pytorch.org for a CUDA build)"
        )
    elif system == "Darwin":
        how = (
            "run '/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install torch' "
            "in a terminal (the path differs for QGIS-LTR)"
        )
    else:
        how = (
            "run 'python3 -m pip install --user torch' with the same python3 that QGIS uses "
            "(on Debian/Ubuntu: /usr/bin/python3; add '--index-url "
            "https://download.pytorch.org/whl/cpu' for the small CPU-only build)"
        )
    return (
        "PyTorch is not installed in the Python that QGIS uses, and CTSTFM needs it. "
        f"To install it, {how}, then restart QGIS."
    )


def require_torch():
    try:
        importlib.import_module("torch")
    except ImportError as exc:
        raise QgsProcessingException(torch_missing_message()) from exc


class FeedbackProgress(Progress):
    """Core progress reported to a ``QgsProcessingFeedback``."""

    def __init__(self, feedback):
        self.feedback = feedback

    def update(self, fraction, message=None):
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * min(max(fraction, 0.0), 1.0))

    def info(self, message):
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def canceled(self):
        return self.feedback is not None and self.feedback.isCanceled()


class CtstfmAlgorithm(QgsProcessingAlgorithm):
    """Base of every algorithm in the ``ctstfm`` provider."""

    algorithm_id = ""
    display_name = ""
    group_key = "fusion"
    help_text = ""
    needs_torch = True

    def createInstance(self):  # noqa: N802
        return type(self)()

    def name(self):
        return self.algorithm_id

    def displayName(self):  # noqa: N802
        return self.display_name

    def group(self):
        return GROUPS[self.group_key]

    def groupId(self):  # noqa: N802
        return self.group_key

    def shortHelpString(self):  # noqa: N802
        return self.help_text

    def icon(self):
        return QIcon(str(RESOURCES_DIR / "icon.svg"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        if self.needs_torch:
            require_torch()
        progress = FeedbackProgress(feedback)
        try:
            return self.process(parameters, context, feedback, progress)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from exc
        except CtstfmError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def process(self, parameters, context, feedback, progress):
        """The algorithm's work; returns the results dict. Subclasses implement this.

        Never name it ``run``: ``QgsProcessingAlgorithm.run(parameters, context, feedback,
        configuration, catchExceptions)`` is what ``processing.run`` calls, and a Python
        ``run`` would shadow it.
        """
        raise NotImplementedError
