"""``ctstfm:temporaldifference`` — Temporal Difference Fusion (a classical baseline).

A thin face on :func:`model_core.classical_raster.temporal_difference_rasters`
on :class:`~.base.ClassicalFusionAlgorithm`; no torch needed. Its parameters are
:data:`model_core.options.TEMPORAL_DIFFERENCE`.
"""

from model_core.options import TEMPORAL_DIFFERENCE

from .base import INPUTS_HELP, ClassicalFusionAlgorithm

TD_HELP = """
Predicts the **fine image at date T1** as **fine T0 + (coarse T1 − coarse T0)**, pixel by pixel, with the
coarse images resampled onto the fine grid: the change seen by the coarse sensor is added to the fine image.
It is the simplest spatiotemporal fusion baseline (no training, no parameters).

**Assumes** that the change between T0 and T1 is smooth at the coarse scale: every fine pixel inside a coarse
pixel changes by the same amount. Abrupt changes smaller than a coarse pixel (a harvested field, a flood edge)
are smeared over the whole coarse pixel, and any misregistration or bias between the two coarse images goes
straight into the result. Compare it with CTSTFM and STARFM using *Assess Fusion Accuracy*.
""" + INPUTS_HELP + """
## Typical values
Tile 256 pixels, no overlap needed (each pixel is computed alone). It reads and writes at disk speed.

## Example
$ qgis_process run ctstfm:temporaldifference -- FINE=landsat_2022-01-01.tif COARSE_T0=modis_2022-01-01.tif COARSE_T1=modis_2022-01-17.tif COARSE_BANDS=3,4,1,2,6,7 OUTPUT=td_2022-01-17.tif
"""


class TemporalDifferenceAlgorithm(ClassicalFusionAlgorithm):
    algorithm_id = "temporaldifference"
    display_name = "Temporal Difference Fusion"
    help_text = TD_HELP
    needs_torch = False
    layer_prefix = "Temporal difference"
    operation = TEMPORAL_DIFFERENCE
