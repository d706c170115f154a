"""``ctstfm:starfm`` — STARFM Fusion (Gao et al. 2006), a classical baseline.

A thin face on :func:`model_core.classical_raster.starfm_rasters` (torch, CPU or
CUDA), with the inputs and options of the temporal difference.
"""

from qgis.core import QgsProcessingParameterNumber

from .base import INPUTS_HELP, ClassicalFusionAlgorithm
from .params import add_device_parameter, device_argument

HELP = """
Predicts the **fine image at date T1** with **STARFM**, the Spatial and Temporal Adaptive Reflectance Fusion
Model (Gao, Masek, Schwaller & Hall, *IEEE Transactions on Geoscience and Remote Sensing* 44(8), 2207–2218,
2006), from one fine/coarse pair at T0 and the coarse image at T1.

For every fine pixel, STARFM looks at the neighbours within a moving **window** that are spectrally similar in
the fine image at T0 (within 2 σ / **classes** of the centre, σ the band's standard deviation over the whole
image), keeps those whose fine–coarse and T0–T1 differences are no larger than the centre's plus the
**uncertainties**, and averages their own temporal-difference predictions (fine T0 + coarse T1 − coarse T0)
with weights that favour small differences and short distances.

**Assumes** that the land cover does not change between T0 and T1 and that each coarse pixel's change is shared
by the similar fine pixels around it: it handles gradual (phenological) change well, and blurs abrupt changes
smaller than a coarse pixel. Compare it with CTSTFM and the temporal difference using *Assess Fusion Accuracy*.
""" + INPUTS_HELP + """
## Typical values
- **Window** (odd, fine pixels; default 31, about 1 km of Landsat): larger windows find more similar neighbours
  but cost as the square of the window.
- **Classes** (default 40): a larger number means a stricter similarity test.
- **Uncertainties** (reflectance, default 0.002): the fine and coarse data's noise levels.
- **Tile overlap**: 0 chooses the window − 1 pixels that tiles need to join without seams; any value below that
  is refused.
- **Device**: a GPU speeds it up many times; on a CPU, use a smaller window for large images (a 384 × 384
  pixel, 6-band image took about 10 s on 2 CPU cores with window 31; docs/benchmarks.md).

## Example
$ qgis_process run ctstfm:starfm -- FINE=landsat_2022-01-01.tif COARSE_T0=modis_2022-01-01.tif COARSE_T1=modis_2022-01-17.tif COARSE_BANDS=3,4,1,2,6,7 WINDOW=31 OUTPUT=starfm_2022-01-17.tif
""" + INPUTS_HELP


class StarfmAlgorithm(ClassicalFusionAlgorithm):
    algorithm_id = "starfm"
    display_name = "STARFM Fusion"
    help_text = HELP
    needs_torch = True
    layer_prefix = "STARFM"
    overlap_label = "Tile overlap (pixels; 0: automatic, window - 1)"

    def tags(self):
        return super().tags() + ["starfm", "gao"]

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add_inputs()
        self.addParameter(
            QgsProcessingParameterNumber(
                "WINDOW", "Moving window (fine pixels, odd)", QgsProcessingParameterNumber.Integer,
                defaultValue=31, minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "CLASSES", "Number of classes (similarity tolerance 2 std / classes)",
                QgsProcessingParameterNumber.Double, defaultValue=40.0, minValue=0.001,
            )
        )
        self.add_tiles()
        add_device_parameter(self)
        uncertainties = [
            QgsProcessingParameterNumber(
                "FINE_UNCERTAINTY", "Fine image uncertainty (reflectance)", QgsProcessingParameterNumber.Double,
                defaultValue=0.002, minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                "COARSE_UNCERTAINTY", "Coarse image uncertainty (reflectance)", QgsProcessingParameterNumber.Double,
                defaultValue=0.002, minValue=0.0,
            ),
        ]
        self.add_advanced(uncertainties + self.advanced_parameters())
        self.add_output()

    def process(self, parameters, context, feedback, progress):
        from model_core.classical_raster import starfm_rasters

        fine, coarse_t0, coarse_t1, output, kwargs, layer = self.common_arguments(parameters, context, progress)
        kwargs["overlap"] = kwargs["overlap"] or None  # 0: window - 1
        result = starfm_rasters(
            fine, coarse_t0, coarse_t1, output,
            window=self.parameterAsInt(parameters, "WINDOW", context),
            classes=self.parameterAsDouble(parameters, "CLASSES", context),
            fine_uncertainty=self.parameterAsDouble(parameters, "FINE_UNCERTAINTY", context),
            coarse_uncertainty=self.parameterAsDouble(parameters, "COARSE_UNCERTAINTY", context),
            device=device_argument(self, parameters, context),
            **kwargs,
        )
        return self.finish(result, output, layer, context, feedback)
