"""``ctstfm:starfm`` — STARFM Fusion (Gao et al. 2006), a classical baseline.

A thin face on :func:`model_core.classical_raster.starfm_rasters` (torch, CPU or
CUDA), with the inputs and options of the temporal difference. Its parameters are
:data:`model_core.options.STARFM`.
"""

from model_core.options import STARFM

from .base import INPUTS_HELP, ClassicalFusionAlgorithm

HELP = """
<p>Predicts the <b>fine image at date T1</b> with <b>STARFM</b>, the Spatial and Temporal Adaptive Reflectance
Fusion Model (Gao, Masek, Schwaller &amp; Hall, <i>IEEE Transactions on Geoscience and Remote Sensing</i> 44(8),
2207&ndash;2218, 2006), from one fine/coarse pair at T0 and the coarse image at T1.</p>
<p>For every fine pixel, STARFM looks at the neighbours within a moving <b>window</b> that are spectrally similar
in the fine image at T0 (within 2&nbsp;&sigma; / <b>classes</b> of the centre, &sigma; the band's standard
deviation over the whole image), keeps those whose fine&ndash;coarse and T0&ndash;T1 differences are no larger than
the centre's plus the <b>uncertainties</b>, and averages their own temporal-difference predictions
(fine T0 + coarse T1 &minus; coarse T0) with weights that favour small differences and short distances.</p>
<p><b>Assumes</b> that the land cover does not change between T0 and T1 and that each coarse pixel's change is
shared by the similar fine pixels around it: it handles gradual (phenological) change well, and blurs abrupt
changes smaller than a coarse pixel. Compare it with CTSTFM and the temporal difference using
<i>Assess Fusion Accuracy</i>.</p>
<h3>Parameters</h3>
<ul>
<li><b>Window</b> (odd, fine pixels; default 31, about 1 km of Landsat): larger windows find more similar
neighbours but cost as the square of the window.</li>
<li><b>Classes</b> (default 40): a larger number means a stricter similarity test.</li>
<li><b>Uncertainties</b> (reflectance, default 0.002): the fine and coarse data's noise levels.</li>
<li><b>Tile overlap</b>: 0 chooses the window &minus; 1 pixels that tiles need to join without seams; any
value below that is refused.</li>
<li><b>Device</b>: a CUDA GPU speeds it up many times; on a CPU, use a smaller window for large images.</li>
</ul>
""" + INPUTS_HELP


class StarfmAlgorithm(ClassicalFusionAlgorithm):
    algorithm_id = "starfm"
    display_name = "STARFM Fusion"
    help_text = HELP
    needs_torch = True
    layer_prefix = "STARFM"
    operation = STARFM

    def tags(self):
        return super().tags() + ["starfm", "gao"]
