"""``ctstfm:fuse`` — Spatiotemporal Fusion.

A thin face on :func:`model_core.fusion.fuse`: it turns the parameters into the
core's arguments, reports progress and honours cancel once per tile (through
``FeedbackProgress``), and names the output layer that the dialog loads. It works
the same in the Toolbox, the graphical modeler and ``qgis_process``.
"""

import os

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
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
Predicts the **fine image at date T1** (e.g. Landsat, 30 m) from the **coarse image at T1** (e.g. MODIS,
500 m) and a **fine image at another date T0**, with a CTSTFM network (Jiang & Shao, IEEE JSTARS 2024, a
CNN-Transformer spatiotemporal fusion model).

## Inputs
- **Fine image at T0**: e.g. Landsat surface reflectance scaled by 10000 (integers), a clear date close to
  T1. The output has exactly its grid: CRS, extent, pixel size, data type and nodata.
- **Coarse image at T1**: e.g. MODIS MOD09GA surface reflectance, in any CRS (the sinusoidal projection is
  fine) and at any resolution. It is resampled onto the fine grid on the fly (bilinear by default; see
  Advanced) and must cover the fine image.
- **Model file**: a CTSTFM model (.pt) trained for these sensors; the models folder set in the provider's
  settings is offered first. Left empty, the model that comes with the plugin is used: trained for under an
  hour on a CPU on simulated Landsat/MODIS-like scenes (6 bands, reflectance × 10000), it is for trying the
  plugin; for real images fine-tune it or train your own with *Train CTSTFM*.
- **Bands**: both images must hold the model's bands in the model's order (usually blue, green, red, NIR,
  SWIR1, SWIR2) and the same reflectance scale (DN × 0.0001). Other orders: give the band numbers under
  Advanced, e.g. `3,4,1,2,6,7` for the seven MODIS land bands.

## Outputs
- **Fused fine image at T1**: a GeoTIFF on the fine grid, loaded with the fine layer's style (or a
  natural-colour composite with the fine image's stretch) so the two compare at a glance. Pixels that are
  nodata in either image are nodata in the output.
- **Seconds** and **device**: how long the fusion took and where it ran (cpu, cuda or mps), for the
  graphical modeler and scripts.

## Typical values
- Tile 256 pixels (the size the network was trained on), overlap 32 pixels (blended, so tiles join without
  seams; the tile must be more than twice the overlap). A larger batch only helps on a GPU.
- Device *auto* takes a CUDA GPU, then an Apple GPU (MPS), then the CPU. On one CPU core a 1024 × 1024
  pixel, 6-band image took 43 s (25 tiles; docs/benchmarks.md).

Cancel stops after the current tile and leaves no file behind.

## Example
Landsat of 2022-01-01 and MODIS of 2022-01-17, the MODIS bands reordered to Landsat's:

$ qgis_process run ctstfm:fuse -- FINE=landsat_2022-01-01.tif COARSE=modis_2022-01-17.tif COARSE_BANDS=3,4,1,2,6,7 OUTPUT=fused_2022-01-17.tif
"""


BUILT_IN_MODEL = "(the plugin's own model)"


class FuseAlgorithm(CtstfmAlgorithm):
    algorithm_id = "fuse"
    display_name = "Spatiotemporal Fusion"
    group_key = "fusion"
    help_text = HELP
    style_input = "FINE"

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "downscaling", "deep learning"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("FINE", "Fine image at T0 (e.g. Landsat)"))
        self.addParameter(QgsProcessingParameterRasterLayer("COARSE", "Coarse image at T1 (e.g. MODIS)"))
        self.addParameter(
            QgsProcessingParameterFile(
                "MODEL",
                "CTSTFM model file (.pt; empty: the plugin's own model)",
                behavior=QgsProcessingParameterFile.File,
                extension="pt",
                optional=True,
            )
        )
        from ..settings import folder_models

        # The models folder of the provider's settings, offered by name (a chosen file wins).
        model_name = QgsProcessingParameterEnum(
            "MODEL_NAME", "Model from the models folder (Processing options; used when no file is chosen)",
            options=[BUILT_IN_MODEL, *folder_models()], defaultValue=BUILT_IN_MODEL, optional=True,
        )
        model_name.setUsesStaticStrings(True)
        self.addParameter(model_name)
        add_tiling_parameters(self, 32)
        add_device_parameter(self)
        advanced = [
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
        self.add_run_outputs()

    def model_path(self, parameters, context):
        """The chosen model file, else the model chosen by name from the models folder, else the
        plugin's own model."""
        from model_core import paths

        from ..settings import folder_models

        chosen = (self.parameterAsFile(parameters, "MODEL", context) or "").strip()
        if chosen:
            return chosen
        name = (self.parameterAsEnumString(parameters, "MODEL_NAME", context) or "").strip()
        if name and name != BUILT_IN_MODEL:
            models = folder_models()
            if name not in models:
                raise QgsProcessingException(
                    f"There is no model '{name}' in the models folder; pick one of "
                    f"{', '.join(models) or '(none: the folder is empty or not set)'}, or a model file."
                )
            return models[name]
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
            **tiling_arguments(self, parameters, context),
            **band_arguments(self, parameters, context),
            **output_arguments(self, parameters, context),
        )
        feedback.pushInfo(
            f"Wrote {result.width} x {result.height} px, {result.bands} bands in {result.seconds:.1f} s "
            f"({result.megapixels_per_second:.2f} Mpx/s on {result.device})."
        )
        name_output_layer(context, output, f"CTSTFM fused {coarse_layer.name()}")
        from model_core.model_file import read_model_metadata

        self.style_fused_output(context, output, fine, read_model_metadata(model).scale)
        return {"OUTPUT": output, "SECONDS": result.seconds, "DEVICE": result.device}
