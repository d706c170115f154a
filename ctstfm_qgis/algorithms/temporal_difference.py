"""``ctstfm:temporaldifference`` — Temporal Difference Fusion (a classical baseline).

Also holds what the classical algorithms share (:class:`ClassicalFusionAlgorithm`:
the three input images, tiles, bands, scale, resampling and output type) and
:func:`raster_layer_source`, the file-based raster check the assessment uses too.
A thin face on :mod:`model_core.classical_raster`; no torch needed.
"""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CtstfmAlgorithm

RESAMPLINGS = ["bilinear", "cubic", "nearest", "average"]
OUTPUT_TYPES = [("input", "Same as the fine input (DN, its data type and nodata)"), ("float32", "Float32 reflectance")]
FORMATS = [("GTiff", "GeoTIFF (tiled, compressed)"), ("COG", "Cloud Optimized GeoTIFF")]


def raster_layer_source(alg, parameters, name, context, label, optional=False):
    """The file path of a raster-layer parameter; a clear error unless it is a GDAL file."""
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if optional:
            return None, None
        raise QgsProcessingException(f"The {label} could not be loaded; choose a raster layer or file.")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {label} '{layer.name()}' is not a file-based raster (provider '{layer.providerType()}'); "
            "save it as a GeoTIFF first (Export > Save As)."
        )
    return layer.source(), layer


def geotiff_output(alg, parameters, name, context):
    output = alg.parameterAsOutputLayer(parameters, name, context)
    if os.path.splitext(output)[1].lower() not in (".tif", ".tiff"):
        raise QgsProcessingException(f"The output '{output}' must be a GeoTIFF file (.tif).")
    return output


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

TD_HELP = """
<p>Predicts the <b>fine image at date T1</b> as <b>fine T0 + (coarse T1 &minus; coarse T0)</b>, pixel by pixel,
with the coarse images resampled onto the fine grid: the change seen by the coarse sensor is added to the fine
image. It is the simplest spatiotemporal fusion baseline (no training, no parameters).</p>
<p><b>Assumes</b> that the change between T0 and T1 is smooth at the coarse scale: every fine pixel inside a
coarse pixel changes by the same amount. Abrupt changes smaller than a coarse pixel (a harvested field, a flood
edge) are smeared over the whole coarse pixel, and any misregistration or bias between the two coarse images goes
straight into the result. Compare it with CTSTFM and STARFM using <i>Assess Fusion Accuracy</i>.</p>
""" + INPUTS_HELP


class ClassicalFusionAlgorithm(CtstfmAlgorithm):
    """The parameters and plumbing the classical methods share."""

    group_key = "classical"
    default_overlap = 0
    overlap_label = "Tile overlap (pixels)"
    output_label = "Fused fine image at T1"
    layer_prefix = ""

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "classical", "baseline"]

    def add_inputs(self):
        self.addParameter(QgsProcessingParameterRasterLayer("FINE", "Fine image at T0 (e.g. Landsat)"))
        self.addParameter(QgsProcessingParameterRasterLayer("COARSE_T0", "Coarse image at T0 (e.g. MODIS)"))
        self.addParameter(QgsProcessingParameterRasterLayer("COARSE_T1", "Coarse image at T1 (e.g. MODIS)"))

    def add_tiles(self):
        self.addParameter(
            QgsProcessingParameterNumber(
                "TILE_SIZE", "Tile size (pixels)", QgsProcessingParameterNumber.Integer, defaultValue=256, minValue=16
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "OVERLAP", self.overlap_label, QgsProcessingParameterNumber.Integer,
                defaultValue=self.default_overlap, minValue=0,
            )
        )

    def advanced_parameters(self):
        return [
            QgsProcessingParameterString(
                "FINE_BANDS", "Fine image bands (e.g. 1,2,3,4,5,6; empty: all bands)", defaultValue="", optional=True
            ),
            QgsProcessingParameterString(
                "COARSE_BANDS",
                "Coarse image bands, in the fine bands' order (e.g. 3,4,1,2,6,7 for MODIS; empty: the first bands)",
                defaultValue="",
                optional=True,
            ),
            QgsProcessingParameterNumber(
                "SCALE", "Reflectance per DN (0.0001 for DN x 10000; 1 for reflectance)",
                QgsProcessingParameterNumber.Double, defaultValue=0.0001, minValue=0.0,
            ),
            QgsProcessingParameterEnum(
                "RESAMPLING", "Resampling of the coarse images onto the fine grid", options=RESAMPLINGS, defaultValue=0
            ),
            QgsProcessingParameterEnum(
                "OUTPUT_TYPE", "Output data type", options=[label for _, label in OUTPUT_TYPES], defaultValue=0
            ),
            QgsProcessingParameterEnum(
                "OUTPUT_FORMAT", "Output file layout", options=[label for _, label in FORMATS], defaultValue=0
            ),
        ]

    def add_advanced(self, parameters):
        for parameter in parameters:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def add_output(self):
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.output_label))

    def common_arguments(self, parameters, context, progress):
        """``(fine, coarse_t0, coarse_t1, output, kwargs, coarse_t1_layer)`` for the core functions."""
        fine, _ = raster_layer_source(self, parameters, "FINE", context, "fine image at T0")
        coarse_t0, _ = raster_layer_source(self, parameters, "COARSE_T0", context, "coarse image at T0")
        coarse_t1, layer = raster_layer_source(self, parameters, "COARSE_T1", context, "coarse image at T1")
        output = geotiff_output(self, parameters, "OUTPUT", context)
        scale = self.parameterAsDouble(parameters, "SCALE", context)
        if not scale > 0:
            raise QgsProcessingException(
                f"The reflectance scale must be positive (got {scale}); use 0.0001 for DN x 10000, 1 for reflectance."
            )
        kwargs = dict(
            tile=self.parameterAsInt(parameters, "TILE_SIZE", context),
            fine_bands=(self.parameterAsString(parameters, "FINE_BANDS", context) or "").strip() or None,
            coarse_bands=(self.parameterAsString(parameters, "COARSE_BANDS", context) or "").strip() or None,
            scale=scale,
            resampling=RESAMPLINGS[self.parameterAsEnum(parameters, "RESAMPLING", context)],
            output_type=OUTPUT_TYPES[self.parameterAsEnum(parameters, "OUTPUT_TYPE", context)][0],
            output_format=FORMATS[self.parameterAsEnum(parameters, "OUTPUT_FORMAT", context)][0],
            progress=progress,
        )
        return fine, coarse_t0, coarse_t1, output, kwargs, layer

    def finish(self, result, output, coarse_t1_layer, context, feedback):
        feedback.pushInfo(
            f"Wrote {result.width} x {result.height} px, {result.bands} bands in {result.seconds:.1f} s "
            f"({result.method}, {result.tiles} tile(s))."
        )
        if context.willLoadLayerOnCompletion(output):
            context.layerToLoadOnCompletionDetails(output).name = f"{self.layer_prefix} {coarse_t1_layer.name()}"
        return {"OUTPUT": output}


class TemporalDifferenceAlgorithm(ClassicalFusionAlgorithm):
    algorithm_id = "temporaldifference"
    display_name = "Temporal Difference Fusion"
    help_text = TD_HELP
    needs_torch = False
    layer_prefix = "Temporal difference"

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_inputs()
        self.add_tiles()
        self.add_advanced(self.advanced_parameters())
        self.add_output()

    def process(self, parameters, context, feedback, progress):
        from model_core.classical_raster import temporal_difference_rasters

        fine, coarse_t0, coarse_t1, output, kwargs, layer = self.common_arguments(parameters, context, progress)
        result = temporal_difference_rasters(
            fine, coarse_t0, coarse_t1, output,
            overlap=self.parameterAsInt(parameters, "OVERLAP", context), **kwargs,
        )
        return self.finish(result, output, layer, context, feedback)
