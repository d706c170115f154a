"""``ctstfm:fuse`` — Spatiotemporal Fusion.

A thin face on :func:`model_core.fusion.fuse` (parameters: :data:`model_core.options.FUSE`):
it turns the parameters into the core's arguments, reports progress and honours cancel once per tile (through
``FeedbackProgress``), and names the output layer that the dialog loads. It works
the same in the Toolbox, the graphical modeler and ``qgis_process``.
"""

from qgis.core import QgsProcessingException, QgsProcessingParameterEnum

from model_core.options import FUSE

from .base import CtstfmAlgorithm
from .params import add_operation_parameters, name_output_layer

HELP = """
Predicts the **fine image at date T1** (e.g. Landsat, 30 m) from the **coarse image at T1** (e.g. MODIS,
500 m) and a **fine image at another date T0**, with a CTSTFM network (Jiang & Shao, IEEE JSTARS 2024, a
CNN-Transformer spatiotemporal fusion model).

## Inputs
- **Fine image at T0**: e.g. Landsat surface reflectance scaled by 10000 (integers), a clear date close to
  T1. The output has exactly its grid: CRS, extent, pixel size, data type and nodata. An image without
  georeferencing (as fusion benchmark sets often come) is read pixel for pixel: then the coarse images must
  have its size.
- **Coarse image at T1**: e.g. MODIS MOD09GA surface reflectance, in any CRS (the sinusoidal projection is
  fine) and at any resolution. It is resampled onto the fine grid on the fly (bilinear by default; see
  Advanced) and must cover the fine image.
- **Model file**: a CTSTFM model (.pt) trained for these sensors. Or pick one by name under *Model from the
  models folder* (the folder set in the provider's settings); a chosen file wins. With neither, the model that comes with the plugin is used: trained for under an
  hour on a CPU on simulated Landsat/MODIS-like scenes (6 bands, reflectance × 10000), it is for trying the
  plugin; for real images fine-tune it or train your own with *Train CTSTFM*. A model *Train CTSTFM*
  fine-tuned is **averaged with the plugin's model** (its form for the mode, cut down to the same bands): on
  real Landsat pairs, a model fine-tuned on two dates and the plugin's model erred differently and their mean
  had 3-6 % lower MAE than either alone (docs/fusion.md). It costs a second pass of the network; turn off
  *Average a model fine-tuned by Train CTSTFM with the plugin's model* under Advanced (MEAN_WITH_PLUGIN_MODEL)
  to use your model alone.
- **Coarse image at T0** (optional): the coarse image of the fine image's date. Three-image models (trained
  with it) use it: their first guess is fine T0 + coarse T1 − coarse T0, in which the two sensors'
  difference cancels. Without it they fall back to their two-image first guess, with a warning. Two-image
  models (like the plugin's own) do not use it, and say so.
- **Bands, by name**: the fine image's bands are matched to the model's by their band descriptions (blue,
  green, red, NIR, SWIR1, SWIR2, B/G/R, or sensor band numbers such as `oli:B4`, `tm:3`, Sentinel-2's `B08`)
  or by **Band names** under Advanced, e.g. `green,red,nir` for a 3-band image. A model with more bands is
  cut down to the ones matched (no retraining), so the plugin's 6-band model runs on a green/red/NIR image;
  the log says which bands were matched. Without names, the first bands are taken in the model's order.
  The coarse image's bands are matched by its own descriptions (MOD09's `sur_refl_b01` ... too), else taken
  at the same band numbers when both images have as many; otherwise the run stops and asks for them: give
  numbers under Advanced, e.g. `3,4,1,2,6,7` for the seven MODIS land bands (`4,1,2` for green, red, NIR).
  Both images need the same reflectance scale (DN × 0.0001, or set the scales under Advanced).
- **Clouds** (advanced, optional): a cloud mask of the fine image (any grid) or a band of it, read by the cloud
  mask rule (non-zero, or the product's own mask: landsat-c2-qa, sentinel2-scl, ... as in *Fuse Time Series*).
  Cloudy pixels are nodata in the output, as the fine image's nodata pixels are; *Fuse Time Series* fills them
  from another fine date. A cloud mask of the coarse image (e.g. MODIS `state_1km`, read by the coarse cloud
  mask rule `modis-state`) makes its cloudy pixels nodata too: nothing was seen there at T1. Where the coarse
  image at T0 is cloudy (its own mask), a three-image model sees no change.

## Outputs
- **Fused fine image at T1**: a GeoTIFF on the fine grid, loaded with the fine layer's style (or a
  natural-colour composite with the fine image's stretch) so the two compare at a glance. Pixels that are
  nodata in either image are nodata in the output.
- **Seconds** and **device**: how long the fusion took and where it ran (cpu, cuda or mps), for the
  graphical modeler and scripts.

## Typical values
- Tile 256 pixels (the size the network was trained on), overlap 32 pixels (blended, so tiles join without
  seams; the tile must be more than twice the overlap). A larger batch only helps on a GPU.
- **Similar-pixel window** 31 pixels (Advanced; 0 turns it off): the network's predicted change is averaged
  over the pixels of the same land cover (spectrally similar in the fine image at T0) within that window, as
  FSDAF's last step does. It lowered the error on every simulated and real Landsat case measured (MAE by 2-5 %,
  docs/fusion.md) and keeps the fine image's edges; it adds about 40 % to the time on a CPU.
- Device *auto* takes a CUDA GPU, then an Apple GPU (MPS), then the CPU. On one CPU core a 1024 × 1024
  pixel, 6-band image took 43 s (25 tiles; docs/benchmarks.md) before the similar-pixel filter, which adds about
  40 %.

## Speed on a CPU
- **CPU inference path** (Advanced): *Automatic* runs the fastest way this CPU passed an accuracy check on
  the bundled sample (the sample's error may change by less than 1 %): exact inference-only algebra,
  bfloat16 on CPUs that compute it natively (AVX-512 BF16, AMX), or compiled code for large images when a
  C++ compiler is installed. The first large job on a new CPU measures the paths once (under a minute, more
  with a compiler) and remembers the choice. *Eager fp32* runs the network exactly as trained.
- **Threads**: 0 uses one thread per physical core, leaving one for the QGIS window.

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
    operation = FUSE
    style_input = "FINE"
    MODEL_NAME = "MODEL_NAME"
    #: Parameters of the QGIS face only (the provider's models folder); not in the option spec.
    qgis_only_parameters = (MODEL_NAME,)

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "downscaling", "deep learning"]

    def add_parameters(self):
        import dataclasses

        from ..settings import folder_models

        after_model = [option.qgis for option in self.operation.options].index(self.MODEL) + 1
        options = self.operation.options
        add_operation_parameters(self, dataclasses.replace(self.operation, options=options[:after_model]))

        # The .pt files of the models folder (Processing options), offered by name; a chosen file wins.
        model_name = QgsProcessingParameterEnum(
            self.MODEL_NAME, self.tr("Model from the models folder (used when no model file is chosen)"),
            options=[BUILT_IN_MODEL, *folder_models()], defaultValue=BUILT_IN_MODEL, optional=True,
        )
        model_name.setUsesStaticStrings(True)
        self.addParameter(model_name)
        add_operation_parameters(self, dataclasses.replace(self.operation, options=options[after_model:]))

    def add_outputs(self):
        self.add_run_outputs()

    def folder_model(self, parameters, context):
        """The path of the model chosen by name from the models folder, or None for the built-in one."""
        from ..settings import folder_models

        name = (self.parameterAsEnumString(parameters, self.MODEL_NAME, context) or "").strip()
        if not name or name == BUILT_IN_MODEL:
            return None
        models = folder_models()
        if name not in models:
            raise QgsProcessingException(
                f"There is no model '{name}' in the models folder; pick one of "
                f"{', '.join(models) or '(none: the folder is empty or not set)'}, or a model file."
            )
        return models[name]

    def process(self, parameters, context, feedback, progress):
        from model_core import paths
        from model_core.fusion import fuse
        from model_core.model_file import read_model_metadata

        kwargs, layers = self.arguments(parameters, context)
        if kwargs.get("threads") is None:
            kwargs["threads"] = desktop_threads()
        kwargs["model_path"] = kwargs["model_path"] or self.folder_model(parameters, context)
        result = fuse(**kwargs, progress=progress)
        feedback.pushInfo(
            self.tr("Wrote {} x {} px, {} bands in {:.1f} s ({:.2f} Mpx/s on {}).").format(
                result.width, result.height, result.bands, result.seconds, result.megapixels_per_second,
                result.device,
            )
        )
        output = kwargs["out_path"]
        name_output_layer(context, output, f"CTSTFM fused {layers['coarse_path'].name()}")
        model = paths.model_or_default(kwargs["model_path"], bool(kwargs.get("coarse_t0_path")))
        self.style_fused_output(context, output, kwargs["fine_path"], read_model_metadata(model).scale)
        return {self.OUTPUT: output, "SECONDS": result.seconds, "DEVICE": result.device}


def desktop_threads():
    """Automatic threads: one per physical core, less one in the QGIS window so its UI stays responsive
    (qgis_process and scripts use every core)."""
    from qgis.core import QgsApplication

    from model_core.inference import default_threads

    return default_threads(desktop=QgsApplication.platform() == "desktop")
