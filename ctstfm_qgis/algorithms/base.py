"""The small base every ctstfm algorithm stands on.

It gives each algorithm its group, help and icon, checks that PyTorch can be
imported before any work starts, reports progress and cancellation to QGIS
through :class:`FeedbackProgress`, and turns the core's
:class:`~model_core.errors.CtstfmError` into a ``QgsProcessingException`` the
user can read. Subclasses implement ``initAlgorithm`` and ``process``.

:class:`ClassicalFusionAlgorithm` adds what the classical methods (temporal
difference, STARFM) share: the three input images, tiles, bands, scale,
resampling and output type. The parameters themselves are built and read by
:mod:`.params`.
"""

import importlib
import platform

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from model_core.errors import Cancelled, CtstfmError
from model_core.paths import RESOURCES_DIR
from model_core.progress import Progress

from ..compat import translate
from .params import add_operation_parameters, name_output_layer, operation_arguments

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
    #: The :class:`model_core.options.Operation` whose options are this algorithm's parameters.
    operation = None

    def __init_subclass__(cls, **kwargs):
        # Every parameter name of the spec becomes a class constant (FuseAlgorithm.FINE == "FINE").
        super().__init_subclass__(**kwargs)
        for option in cls.operation.options if cls.operation else ():
            setattr(cls, option.qgis, option.qgis)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def tr(self, text):
        return translate(type(self).__name__, text)

    def initAlgorithm(self, config=None):  # noqa: N802
        add_operation_parameters(self, self.operation)
        self.add_outputs()

    def add_outputs(self):
        """Outputs that are not parameters (numbers, reports); subclasses add theirs here."""

    def arguments(self, parameters, context):
        """``(kwargs, layers)`` of :func:`.params.operation_arguments` for this algorithm's operation."""
        return operation_arguments(self, self.operation, parameters, context)

    def name(self):
        return self.algorithm_id

    def displayName(self):  # noqa: N802
        return self.tr(self.display_name)

    def group(self):
        return self.tr(GROUPS[self.group_key])

    def groupId(self):  # noqa: N802
        return self.group_key

    def shortHelpString(self):  # noqa: N802
        return self.tr(self.help_text)

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


INPUTS_HELP = """
<h3>Inputs</h3>
<ul>
<li><b>Fine image at T0</b>: e.g. Landsat surface reflectance scaled by 10000, a clear date close to T1. The
output has exactly its grid: CRS, extent, pixel size, data type and nodata.</li>
<li><b>Coarse image at T0</b> and <b>coarse image at T1</b>: e.g. MODIS MOD09GA of the same two dates,
in any CRS (the sinusoidal projection is fine) and resolution; both are resampled onto the fine grid on the fly
(bilinear by default; see Advanced). They must cover the fine image.</li>
</ul>
<p>The three images must hold the same bands <i>in the same order</i> and the same reflectance scale (DN
&times; 0.0001 by default; set the scale to 1 for float reflectance). If the coarse files hold the bands in
another order, give the band numbers under Advanced, e.g. <tt>3,4,1,2,6,7</tt> for the seven MODIS land bands
against Landsat's blue, green, red, NIR, SWIR1, SWIR2. Pixels that are nodata in any input are nodata in the
output. The images are processed in tiles, so any size fits in memory; cancel stops after the current tile and
leaves no file behind.</p>
"""


class ClassicalFusionAlgorithm(CtstfmAlgorithm):
    """What the classical methods share: their inputs, the core call and the closing message."""

    group_key = "classical"
    layer_prefix = ""

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "classical", "baseline"]

    def process(self, parameters, context, feedback, progress):
        kwargs, layers = self.arguments(parameters, context)
        result = self.operation.core_function()(**kwargs, progress=progress)
        feedback.pushInfo(
            self.tr("Wrote {} x {} px, {} bands in {:.1f} s ({}, {} tile(s)).").format(
                result.width, result.height, result.bands, result.seconds, result.method, result.tiles
            )
        )
        output = kwargs["out_path"]
        name_output_layer(context, output, f"{self.layer_prefix} {layers['coarse_t1'].name()}")
        return {self.OUTPUT: output}
