"""``ctstfm:fuse`` — Spatiotemporal Fusion.

A thin face on :func:`model_core.fusion.fuse`: it turns the parameters into the
core's arguments, reports progress and honours cancel once per tile (through
``FeedbackProgress``), and names the output layer that the dialog loads. It works
the same in the Toolbox, the graphical modeler and ``qgis_process``.
"""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .base import CtstfmAlgorithm
from .params import (
    add_advanced,
    add_device_parameter,
    add_tiling_parameters,
    band_arguments,
    band_parameters,
    device_argument,
    geotiff_output,
    name_output_layer,
    output_arguments,
    output_parameters,
    raster_layer_source,
    tiling_arguments,
)

HELP = """
<p>Predicts the <b>fine image at date T1</b> (e.g. Landsat, 30 m) from the <b>coarse image at T1</b>
(e.g. MODIS, 500 m) and a <b>fine image at another date T0</b>, with a CTSTFM network
(Jiang &amp; Shao, IEEE JSTARS 2024, a CNN-Transformer spatiotemporal fusion model).</p>
<h3>Inputs</h3>
<ul>
<li><b>Fine image at T0</b>: e.g. Landsat surface reflectance scaled by 10000 (integers), a clear date
close to T1. The output has exactly its grid: CRS, extent, pixel size, data type and nodata.</li>
<li><b>Coarse image at T1</b>: e.g. MODIS MOD09GA surface reflectance, in any CRS (the sinusoidal
projection is fine) and at any resolution. It is resampled onto the fine grid on the fly
(bilinear by default; see Advanced). It must cover the fine image.</li>
<li><b>Model file</b>: a CTSTFM model (.pt) trained for these sensors. Left empty, the model that
comes with the plugin is used: it was trained for under an hour on a CPU, on simulated
Landsat/MODIS-like scenes (irrigated fields and urban change, 6 bands, reflectance &times; 10000),
and predicts a correction to the coarse change added to the fine image. It is for trying the
plugin; for real images, fine-tune it or train your own on a series of your area with
<i>Train CTSTFM</i> (see docs/default_model.md). Both images must have the same reflectance
scale (DN &times; 0.0001 for the usual products).</li>
<li><b>Coarse image at T0</b> (optional): the coarse image of the fine image's date. Three-image models
(trained with it) use it: their first guess is fine T0 + coarse T1 &minus; coarse T0, in which the two
sensors' difference cancels. Without it they fall back to their two-image first guess, with a warning.
Two-image models (like the plugin's own) do not use it.</li>
</ul>
<h3>Bands</h3>
<p>The fine image's bands are matched to the model's <b>by name</b>: from its band descriptions
(blue, green, red, NIR, SWIR1, SWIR2, B/G/R, or sensor band numbers such as <tt>oli:B4</tt>,
<tt>tm:3</tt>, Sentinel-2's <tt>B08</tt>), or from <b>Band names</b> under Advanced, e.g.
<tt>green,red,nir</tt> for a 3-band image. A model with more bands is cut down to the ones matched
(no retraining), so the plugin's 6-band model runs on a green/red/NIR image; the log says which bands
were matched. Without names, the first bands are taken in the model's order. The coarse image's bands
are matched by its descriptions, else taken at the same band numbers (or the first ones); give
numbers under Advanced when they differ, e.g. <tt>4,1,2</tt> for green, red and NIR of the seven MODIS
land bands.</p>
<h3>Tiles</h3>
<p>The images are processed in square <b>tiles</b> (default 256 pixels, the size the network was
trained on) so any size of image fits in memory. Neighbouring tiles share an <b>overlap</b>
(default 32 pixels) that is blended smoothly, which removes seams at tile edges; the tile size must
be more than twice the overlap. A larger batch size only helps on a GPU.</p>
<p>Pixels that are nodata in either image are nodata in the output. Cancel stops after the current
tile and leaves no file behind.</p>
"""


class FuseAlgorithm(CtstfmAlgorithm):
    algorithm_id = "fuse"
    display_name = "Spatiotemporal Fusion"
    group_key = "fusion"
    help_text = HELP

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "downscaling", "deep learning"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("FINE", "Fine image at T0 (e.g. Landsat)"))
        self.addParameter(QgsProcessingParameterRasterLayer("COARSE", "Coarse image at T1 (e.g. MODIS)"))
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "COARSE_T0", "Coarse image at T0 (optional; used by three-image models)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                "CTSTFM model file (.pt; empty: the plugin's own model)",
                behavior=QgsProcessingParameterFile.File,
                extension="pt",
                optional=True,
            )
        )
        add_tiling_parameters(self, 32)
        add_device_parameter(self)
        advanced = [
            QgsProcessingParameterString(
                "BANDS",
                "Names of the fine image's bands (e.g. green,red,nir; empty: from its band descriptions)",
                defaultValue="",
                optional=True,
            ),
            *band_parameters(
                "Fine image bands, in the model's order (e.g. 1,2,3,4,5,6; empty: the first bands)",
                "Coarse image bands, in the model's order (e.g. 3,4,1,2,6,7 for MODIS; empty: the first bands)",
            ),
            *output_parameters("Resampling of the coarse image onto the fine grid"),
            QgsProcessingParameterNumber(
                "BATCH_SIZE",
                "Tiles per batch (0: automatic; more only helps on a GPU)",
                QgsProcessingParameterNumber.Integer,
                defaultValue=0,
                minValue=0,
            ),
        ]
        add_advanced(self, advanced)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Fused fine image at T1"))

    def model_path(self, parameters, context):
        """The chosen model file, or the plugin's own model when none was chosen."""
        from model_core import paths

        chosen = (self.parameterAsFile(parameters, "MODEL", context) or "").strip()
        if chosen:
            return chosen
        if os.path.isfile(str(paths.DEFAULT_MODEL)):
            return str(paths.DEFAULT_MODEL)
        raise QgsProcessingException(
            "No model file was chosen and this installation of the plugin has no built-in model; "
            "pick a CTSTFM model file (.pt), or train one with 'Train CTSTFM' in the Training group."
        )

    def process(self, parameters, context, feedback, progress):
        from model_core.fusion import fuse

        fine, _ = raster_layer_source(self, parameters, "FINE", context, "fine image")
        coarse, coarse_layer = raster_layer_source(self, parameters, "COARSE", context, "coarse image")
        coarse_t0, _ = raster_layer_source(self, parameters, "COARSE_T0", context, "coarse image at T0", optional=True)
        model = self.model_path(parameters, context)
        output = geotiff_output(self, parameters, "OUTPUT", context)
        batch_size = self.parameterAsInt(parameters, "BATCH_SIZE", context)
        result = fuse(
            fine,
            coarse,
            model,
            output,
            device=device_argument(self, parameters, context),
            batch_size=batch_size if batch_size > 0 else None,
            progress=progress,
            coarse_t0_path=coarse_t0,
            bands=(self.parameterAsString(parameters, "BANDS", context) or "").strip() or None,
            **tiling_arguments(self, parameters, context),
            **band_arguments(self, parameters, context),
            **output_arguments(self, parameters, context),
        )
        feedback.pushInfo(
            f"Wrote {result.width} x {result.height} px, {result.bands} bands in {result.seconds:.1f} s "
            f"({result.megapixels_per_second:.2f} Mpx/s on {result.device})."
        )
        name_output_layer(context, output, f"CTSTFM fused {coarse_layer.name()}")
        return {"OUTPUT": output}
