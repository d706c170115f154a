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

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
)
from qgis.PyQt.QtGui import QIcon

from model_core.errors import Cancelled, CtstfmError, OptionError
from model_core.paths import RESOURCES_DIR
from model_core.progress import Progress

from ..compat import translate
from ..help import render_help
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

    def warning(self, message):
        if self.feedback is not None:
            self.feedback.pushWarning(message)

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
    #: The raster parameter whose look fused outputs copy (see :mod:`..styling`); None: no fused output.
    style_input = None

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
        self.add_parameters()
        self.add_outputs()
        device = self.parameterDefinition("DEVICE")
        if device is not None:  # the provider's default-device setting
            from ..settings import default_device_index

            device.setDefaultValue(default_device_index())

    def add_parameters(self):
        """The operation's parameters (subclasses may add their QGIS-only ones among them)."""
        add_operation_parameters(self, self.operation)

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
        return render_help(self.tr(self.help_text))

    def icon(self):
        return QIcon(str(RESOURCES_DIR / "icon.svg"))

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Runs in the main thread: the place to copy the style of an input layer of the project."""
        from ..styling import project_layer_renderer

        self.fine_renderer = (
            project_layer_renderer(self, parameters, self.style_input, context) if self.style_input else None
        )
        return True

    def style_fused_output(self, context, output, fine_path, reflectance_scale):
        """Load ``output`` drawn like the fine input ``fine_path`` (its layer's style, or a composite);
        ``reflectance_scale``: reflectance per DN, for a float32 reflectance output of a DN input."""
        from ..settings import composite_bands
        from ..styling import FineImageStyle, style_output

        renderer = getattr(self, "fine_renderer", None)
        style_output(context, output, FineImageStyle(fine_path, renderer, composite_bands(), reflectance_scale))

    def add_run_outputs(self):
        """``SECONDS`` and ``DEVICE``: how long the run took and where, for models and scripts."""
        self.addOutput(QgsProcessingOutputNumber("SECONDS", self.tr("Run time (seconds)")))
        self.addOutput(QgsProcessingOutputString("DEVICE", self.tr("Device the run used (cpu, cuda, mps)")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        if self.needs_torch:
            require_torch()
        progress = FeedbackProgress(feedback)
        try:
            return self.process(parameters, context, feedback, progress)
        except Cancelled as exc:
            raise QgsProcessingException(str(exc)) from exc
        except OptionError as exc:
            raise QgsProcessingException(exc.render(self.parameter_name)) from exc
        except CtstfmError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def parameter_name(self, key):
        """This algorithm's parameter for a core option key (``lr`` -> ``LEARNING_RATE``), from the
        spec; how a :class:`~model_core.errors.OptionError` names an option in QGIS."""
        try:
            return self.operation.option(key).qgis
        except (AttributeError, KeyError):
            return key.upper()

    def process(self, parameters, context, feedback, progress):
        """The algorithm's work; returns the results dict. Subclasses implement this.

        Never name it ``run``: ``QgsProcessingAlgorithm.run(parameters, context, feedback,
        configuration, catchExceptions)`` is what ``processing.run`` calls, and a Python
        ``run`` would shadow it.
        """
        raise NotImplementedError


INPUTS_HELP = """
## Inputs
- **Fine image at T0**: e.g. Landsat surface reflectance scaled by 10000, a clear date close to T1. The output
  has exactly its grid: CRS, extent, pixel size, data type and nodata.
- **Coarse image at T0** and **coarse image at T1**: e.g. MODIS MOD09GA of the same two dates, in any CRS (the
  sinusoidal projection is fine) and resolution; both are resampled onto the fine grid on the fly (bilinear by
  default; see Advanced). They must cover the fine image.
- The three images hold the same bands *in the same order* and the same reflectance scale (DN × 0.0001 by
  default; set the scale to 1 for float reflectance). If the coarse files hold the bands in another order, give
  the band numbers under Advanced, e.g. `3,4,1,2,6,7` for the seven MODIS land bands against Landsat's blue,
  green, red, NIR, SWIR1, SWIR2.
- **Clouds** (Advanced, optional): a cloud mask of each image, any grid, read by the cloud mask rule (the fine
  image's: non-zero, or the product's own such as `landsat-c2-qa`) and the coarse cloud mask rule (the coarse
  images': `modis-state` for MODIS `state_1km`), as in *Fuse Time Series*.

## Outputs
- **Fused fine image at T1**: a GeoTIFF on the fine grid, loaded with the fine layer's style (or a
  natural-colour composite with its stretch). Pixels that are nodata or cloud in any input are nodata in the
  output.
- **Seconds** and **device**: how long the method took and where it ran, for the graphical modeler.

The images are processed in tiles, so any size fits in memory; cancel stops after the current tile and leaves no
file behind.
"""


class ClassicalFusionAlgorithm(CtstfmAlgorithm):
    """What the classical methods share: their inputs, the core call and the closing message."""

    group_key = "classical"
    layer_prefix = ""
    style_input = "FINE"

    def add_outputs(self):
        self.add_run_outputs()

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
        self.style_fused_output(context, output, kwargs["fine_t0"], kwargs["scale"])
        return {self.OUTPUT: output, "SECONDS": result.seconds, "DEVICE": result.device}
