"""``ctstfm:fuse`` — Spatiotemporal Fusion.

A thin face on :func:`model_core.fusion.fuse` (parameters: :data:`model_core.options.FUSE`):
it turns the parameters into the core's arguments, reports progress and honours cancel once per tile (through
``FeedbackProgress``), and names the output layer that the dialog loads. It works
the same in the Toolbox, the graphical modeler and ``qgis_process``.
"""

from model_core.options import FUSE

from .base import CtstfmAlgorithm
from .params import name_output_layer

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
<i>Train CTSTFM</i> (see docs/default_model.md). Both images must hold the model's bands
<i>in the model's order</i> (usually blue, green, red, NIR, SWIR1, SWIR2) and the same reflectance
scale (DN &times; 0.0001 for the usual products). If the files hold other bands or another order,
give the band numbers under Advanced, e.g. <tt>3,4,1,2,6,7</tt> for the seven MODIS land bands.</li>
</ul>
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
    operation = FUSE

    def tags(self):
        return ["ctstfm", "fusion", "spatiotemporal", "landsat", "modis", "downscaling", "deep learning"]

    def process(self, parameters, context, feedback, progress):
        from model_core.fusion import fuse

        kwargs, layers = self.arguments(parameters, context)
        result = fuse(**kwargs, progress=progress)
        feedback.pushInfo(
            self.tr("Wrote {} x {} px, {} bands in {:.1f} s ({:.2f} Mpx/s on {}).").format(
                result.width, result.height, result.bands, result.seconds, result.megapixels_per_second,
                result.device,
            )
        )
        name_output_layer(context, kwargs["out_path"], f"CTSTFM fused {layers['coarse_path'].name()}")
        return {self.OUTPUT: kwargs["out_path"]}
