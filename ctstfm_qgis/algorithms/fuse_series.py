"""``ctstfm:fuseseries`` — Fuse Time Series.

A thin face on :func:`model_core.series.fuse_series`: the series from a manifest
or from layers with dates, the target dates, the references, the usual tiling,
device, band and output options, and an output folder. The fused dates are
loaded (from the dialog or ``runAndLoadResults``) with their temporal properties
set to their date, so the Temporal Controller animates the series at once.
"""

import datetime as _dt

from qgis.core import (
    QgsDateTimeRange,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsRasterLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

from model_core.errors import CtstfmError

from .base import CtstfmAlgorithm
from .fuse import FuseAlgorithm
from .params import (
    add_advanced,
    add_device_parameter,
    add_tiling_parameters,
    band_arguments,
    band_parameters,
    device_argument,
    output_arguments,
    output_parameters,
    tiling_arguments,
)
from .train import _layer_path

TARGETS = [
    ("missing", "Coarse dates without a fine image"),
    ("all", "All coarse dates (dates with a fine image are predicted from the others)"),
    ("step", "A regular step (start, end, every N days), each with the nearest coarse image"),
]

HELP = """
<p>Fills a time series: a <b>fine image at every target date</b> (e.g. Landsat, 30 m) from a few fine dates
and a coarse image (e.g. MODIS, 500 m) at each target date, with a CTSTFM model, in one run.</p>
<h3>Inputs</h3>
<ul>
<li><b>Series manifest</b>: a CSV with the columns <tt>date,fine,coarse</tt> (optionally <tt>mask</tt>, a
cloud-mask raster per fine date, non-zero = cloud). Either path may be empty: fine dates without a coarse
image, coarse dates without a fine one. Paths are relative to the CSV. <i>Or</i> the <b>fine layers</b>
and the <b>coarse layers</b>, with their dates typed (the fine layers' dates first, then the coarse
layers') or read from the file names.</li>
<li><b>Target dates</b>: the coarse dates without a fine image (default), all coarse dates, or a regular
step with the nearest coarse image.</li>
<li><b>References</b>: each date is predicted from the nearest fine date before it and the nearest after
it, and the two predictions are blended per pixel, with more weight to the reference closer in time and
to the one whose image, seen at the coarse scale, is closer to the coarse image of the date. A pixel that
is nodata or cloud in one reference comes from the other; in both, it is nodata.</li>
</ul>
<h3>Outputs</h3>
<p>In the output folder: <tt>fused_YYYY-MM-DD.tif</tt> per date (date and references in its metadata),
<tt>index.csv</tt>, <tt>stack.vrt</tt> (one band per date and band) and optionally <tt>quicklook.png</tt>.
Each loaded date has its date as temporal range: open the Temporal Controller to animate the series.
Cancel keeps the dates already finished; running again with the same settings skips them and resumes.</p>
"""

# Post-processors must outlive the algorithm run (QGIS keeps only a pointer).
_POST_PROCESSORS = []


class DateTemporalProperties(QgsProcessingLayerPostProcessorInterface):
    """Gives a loaded raster a fixed temporal range: its day."""

    def __init__(self, date):
        super().__init__()
        self.date = date

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        start = QDateTime(QDate(self.date.year, self.date.month, self.date.day), QTime(0, 0, 0), Qt.UTC)
        properties = layer.temporalProperties()
        properties.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
        properties.setFixedTemporalRange(QgsDateTimeRange(start, start.addDays(1), True, False))
        properties.setIsActive(True)


class FuseSeriesAlgorithm(CtstfmAlgorithm):
    algorithm_id = "fuseseries"
    display_name = "Fuse Time Series"
    group_key = "fusion"
    help_text = HELP

    def tags(self):
        return ["ctstfm", "fusion", "time series", "spatiotemporal", "landsat", "modis", "gap filling", "temporal"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(
            "MANIFEST", "Series manifest (CSV date,fine,coarse[,mask]; either path may be empty)",
            behavior=QgsProcessingParameterFile.File, fileFilter="CSV files (*.csv *.CSV);;All files (*.*)",
            optional=True,
        ))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "FINE_LAYERS", "Fine images (instead of a manifest)", QgsProcessing.TypeRaster, optional=True
        ))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "COARSE_LAYERS", "Coarse images (instead of a manifest)", QgsProcessing.TypeRaster, optional=True
        ))
        self.addParameter(QgsProcessingParameterString(
            "DATES", "Dates of the fine layers, then of the coarse layers, comma-separated YYYY-MM-DD "
                     "(empty: read from the file names)", optional=True,
        ))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", "CTSTFM model file (.pt; empty: the plugin's own model)",
            behavior=QgsProcessingParameterFile.File, extension="pt", optional=True,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            "TARGETS", "Target dates", options=[label for _, label in TARGETS], defaultValue=0
        ))
        self.addParameter(QgsProcessingParameterString("START", "Regular step: first date (YYYY-MM-DD)", optional=True))
        self.addParameter(QgsProcessingParameterString("END", "Regular step: last date (YYYY-MM-DD)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EVERY_DAYS", "Regular step: every N days", QgsProcessingParameterNumber.Integer, defaultValue=8,
            minValue=1,
        ))
        self.addParameter(QgsProcessingParameterEnum(
            "REFERENCES", "References per date",
            options=["Two: the nearest fine dates before and after, blended", "One: the nearest fine date"],
            defaultValue=0,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_GAP_DAYS", "Farthest usable fine date, in days (0: any)", QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0,
        ))
        add_tiling_parameters(self, 32)
        add_device_parameter(self)
        add_advanced(self, [
            *band_parameters(
                "Fine image bands, in the model's order (e.g. 1,2,3,4,5,6; empty: the first bands)",
                "Coarse image bands, in the model's order (e.g. 3,4,1,2,6,7 for MODIS; empty: the first bands)",
            ),
            QgsProcessingParameterNumber(
                "MASK_BAND", "Cloud band of the fine images (non-zero = cloud; 0: none)",
                QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0,
            ),
            *output_parameters("Resampling of the coarse images onto the fine grid"),
            QgsProcessingParameterNumber(
                "BATCH_SIZE", "Tiles per batch (0: automatic; more only helps on a GPU)",
                QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0,
            ),
            QgsProcessingParameterBoolean("QUICKLOOK", "Write a quicklook PNG (thumbnails, mean NDVI)", False),
        ])
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Output folder"))
        self.addOutput(QgsProcessingOutputFile("INDEX", "Index of the fused dates (CSV)"))
        self.addOutput(QgsProcessingOutputRasterLayer("STACK", "Stack of the fused dates (VRT)"))
        self.addOutput(QgsProcessingOutputMultipleLayers("OUTPUT_LAYERS", "Fused dates"))
        self.addOutput(QgsProcessingOutputFile("QUICKLOOK_PNG", "Quicklook (PNG)"))

    def series(self, parameters, context, progress):
        """A manifest path, or the pairs of the chosen layers."""
        from model_core.series import load_series

        manifest = self.parameterAsFile(parameters, "MANIFEST", context)
        fines = [_layer_path(layer) for layer in self.parameterAsLayerList(parameters, "FINE_LAYERS", context)]
        coarses = [_layer_path(layer) for layer in self.parameterAsLayerList(parameters, "COARSE_LAYERS", context)]
        if manifest and (fines or coarses):
            raise CtstfmError("Give either a manifest or the fine and coarse layers, not both.")
        if manifest:
            return manifest
        if not (fines or coarses):
            raise CtstfmError(
                "No series given: choose a manifest CSV (date,fine,coarse), or the fine and the coarse layers."
            )
        dates = self.parameterAsString(parameters, "DATES", context)
        return load_series(fines=fines, coarses=coarses, dates=dates, progress=progress)

    def process(self, parameters, context, feedback, progress):
        from model_core.series import fuse_series

        batch_size = self.parameterAsInt(parameters, "BATCH_SIZE", context)
        targets = TARGETS[self.parameterAsEnum(parameters, "TARGETS", context)][0]
        result = fuse_series(
            self.series(parameters, context, progress),
            FuseAlgorithm.model_path(self, parameters, context),
            self.parameterAsString(parameters, "OUTPUT_FOLDER", context),
            targets=targets,
            start=(self.parameterAsString(parameters, "START", context) or "").strip() or None,
            end=(self.parameterAsString(parameters, "END", context) or "").strip() or None,
            every_days=self.parameterAsInt(parameters, "EVERY_DAYS", context),
            references=2 - self.parameterAsEnum(parameters, "REFERENCES", context),
            max_gap_days=self.parameterAsInt(parameters, "MAX_GAP_DAYS", context) or None,
            mask_band=self.parameterAsInt(parameters, "MASK_BAND", context) or None,
            device=device_argument(self, parameters, context),
            batch_size=batch_size if batch_size > 0 else None,
            quicklook=self.parameterAsBool(parameters, "QUICKLOOK", context),
            progress=progress,
            **tiling_arguments(self, parameters, context),
            **band_arguments(self, parameters, context),
            **output_arguments(self, parameters, context),
        )
        feedback.pushInfo(
            f"{len(result.written)} date(s) fused and {len(result.kept)} kept from an earlier run, "
            f"{result.width} x {result.height} px, in {result.seconds:.1f} s on {result.device}."
        )
        layers = []
        for day, path in result.files.items():
            details = QgsProcessingContext.LayerDetails(f"CTSTFM fused {day}", context.project(), "OUTPUT_LAYERS")
            processor = DateTemporalProperties(_dt.date.fromisoformat(day))
            _POST_PROCESSORS.append(processor)
            details.setPostProcessor(processor)
            context.addLayerToLoadOnCompletion(path, details)
            layers.append(path)
        return {
            "OUTPUT_FOLDER": result.out_folder,
            "INDEX": result.index,
            "STACK": result.stack,
            "OUTPUT_LAYERS": layers,
            "QUICKLOOK_PNG": result.quicklook,
        }
