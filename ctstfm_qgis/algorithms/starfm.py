"""``ctstfm:starfm`` — STARFM Fusion (Gao et al. 2006), a classical baseline.

A thin face on :func:`model_core.classical_raster.starfm_rasters` (torch, CPU or
CUDA), with the inputs and options of the temporal difference. Its parameters are
:data:`model_core.options.STARFM`.
"""

from model_core.options import STARFM

from .base import INPUTS_HELP, ClassicalFusionAlgorithm

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
"""


class StarfmAlgorithm(ClassicalFusionAlgorithm):
    algorithm_id = "starfm"
    display_name = "STARFM Fusion"
    help_text = HELP
    needs_torch = True
    layer_prefix = "STARFM"
    operation = STARFM

    def tags(self):
        return super().tags() + ["starfm", "gao"]
