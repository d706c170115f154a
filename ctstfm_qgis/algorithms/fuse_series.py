"""``ctstfm:fuseseries`` — Fuse Time Series.

A thin face on :func:`model_core.series.fuse_series_from_inputs` (parameters:
:data:`model_core.options.FUSE_SERIES`). The fused dates are loaded (from the dialog
or ``runAndLoadResults``) with their temporal properties set to their date, so the
Temporal Controller animates the series at once.
"""

import datetime as _dt

from qgis.core import (
    QgsDateTimeRange,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputRasterLayer,
)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime, QTimeZone

from model_core.options import FUSE_SERIES

from ..compat import RASTER_TEMPORAL_FIXED
from .base import CtstfmAlgorithm

HELP = """
Fills a time series: a **fine image at every target date** (e.g. Landsat, 30 m) from a few fine dates and a
coarse image (e.g. MODIS, 500 m) at each target date, with a CTSTFM model, in one run.

## Inputs
- **Series manifest**: a CSV with the columns `date,fine,coarse` (optionally `mask` and `coarse_mask`,
  cloud-mask rasters of the fine and the coarse image of a date). Either image may be empty: fine dates without
  a coarse image, coarse dates without a fine one. Paths are relative to the CSV.
- **Clouds**: the `mask` column, or a band of the fine images (**Cloud band**, advanced). Non-zero is cloud
  unless the **Cloud mask rule** (advanced) names the product's mask: `landsat-c2-qa` (Landsat Collection 2
  QA_PIXEL bits), `landsat-c1-qa`, `hls-fmask`, `sentinel2-scl` (classes), `fmask`, or `bits:3,4` /
  `values:3,8,9,10` / `field:0-1=1,2`. The `coarse_mask` column has its own **Coarse cloud mask rule**:
  `modis-state` for MODIS's `state_1km` (on its own 1 km grid is fine). A quality band read as non-zero (it
  would mask everything) is refused, naming the rule.
- Or the **fine layers** and the **coarse layers**, with their dates typed (the fine layers' dates first,
  then the coarse layers') or read from the file names (YYYY-MM-DD or YYYYMMDD).
- **Target dates**: the coarse dates without a fine image (default), all coarse dates, or a regular step
  with the nearest coarse image.
- **Model file**: empty uses the model that comes with the plugin. To fill dates between fine dates it
  did better, in our simulated series, than a model fine-tuned on three fine dates with *Train CTSTFM*;
  on real Landsat dates tuned models did from 14 % better to 7 % worse (docs/benchmarks.md), so it is
  the safe choice. A model of yours is checked against it and against the mean of the two (**Check a model
  of yours against the plugin's ...**, advanced): on each fine date between two others that was not among its
  training dates, left out and predicted from its neighbours; the best of the three fills the dates between
  fine dates (the log gives the scores, `index.csv` the model of each date, `a.pt + b.pt` for the mean). The
  mean is weighed for a model trained on three or more dates: on real Landsat series it filled the dates
  between fine dates better than the plugin's model in 37 of the 38 series measured (240 and 480 m coarse
  pixels; 8-10 % on average). Where every such fine
  date was among its training dates, its score would flatter it and the plugin's model fills the dates
  between: keep one inner fine date out of the training to have yours checked; where the series has no such
  date, a fine-tuned model fills them averaged with the plugin's. Dates before the first or after the last
  fine date take your model.
- **Bands, by name**, as in *Spatiotemporal Fusion*: the fine images' band descriptions, or **Band names**
  under Advanced (e.g. `green,red,nir`), so the plugin's 6-band model runs on a 3-band series; the log says
  which bands were matched. The images are read at the model's reflectance scale (DN × 0.0001 for the
  plugin's model) unless **Reflectance per DN** under Advanced says otherwise (1 for float reflectance);
  every image the run uses is checked first, and one that cannot be reflectance at its scale is refused.

## How
Each date is predicted from the nearest fine date before it and the nearest after it, and the two predictions
are blended per pixel: more weight to the reference closer in time and to the one whose surroundings, seen at
the coarse scale, changed less since then. A pixel that is nodata or cloud in one reference comes from the
other; in both, from the next fine date clear there (unchanged), else it is nodata. Where the
coarse image of a date is nodata or cloud (its `coarse_mask`), the nearest coarse image of the series within a
few days (3, under Advanced) that is clear there stands in; where none is, nothing was seen near that day and
the fine dates are interpolated in time there (**Interpolate the fine dates in time ...**, advanced; off:
nodata). The index says how much of each date each of these is. Beside each fused date a quality layer
(`quality_YYYY-MM-DD.tif`, in the output folder) says per pixel how it was made: band 1 bits 1 one fine date
only, 2 another day's coarse image, 4 interpolated in time, 8 a farther fine date (0: the full method); band 2
the days to the fine date used. Each reference is encoded once per tile for all the dates around it. A
three-image model (the default of *Train CTSTFM*) gets each reference date's own coarse image as its coarse
image at T0, from the series itself; without a model chosen, the plugin's model in its three-image form is
used when every fine date has its coarse image. The dates between fine dates are then fitted on the series
itself (*Fit the first guess and the share of change kept*, advanced, on): each inner fine date with a coarse
image is left out and predicted from its neighbours, which gives per band how much of the coarse image's
deviation from the time interpolation to trust, and how much of each prediction's change to keep; in nine
simulated series this lowered the error of the filled dates by 7-23 % MAE. With only two such fine dates, the
first part is fitted on the change between them (0.4-8 % lower MAE; docs/fusion.md).

## Outputs
In the output folder: `fused_YYYY-MM-DD.tif` per date (date and references in its metadata), its
`quality_YYYY-MM-DD.tif` (how each pixel was made, above; **Write a quality layer per date**, advanced; not
loaded, but listed as an output for the graphical modeler),
`index.csv`, `stack.vrt` (one band per date and band) and optionally `quicklook.png`. Each loaded date has its
day as temporal range: open the Temporal Controller to animate the series.

## Typical values
- Tile 256 pixels and overlap 32, as in *Spatiotemporal Fusion*. Two references per date; a maximum gap of
  0 (any) unless the surface changes fast (then e.g. 64 days).
- Similar-pixel window 31 (Advanced; 0: off), as in *Spatiotemporal Fusion*: each reference's predicted change
  is averaged over the pixels of the same land cover nearby (real Landsat series: 1.7 % lower MAE, 17 of 18
  dates better).
- Time: about the time of one *Spatiotemporal Fusion* run per date, although each date uses two
  references (one 256 x 256 tile of 10 dates: 68 s against 126 s for the 20 separate runs on one loaded
  CPU core; docs/fusion.md).

Cancel keeps the dates already finished and leaves no partial file; running again with the same settings
skips them and resumes.

## Example
$ qgis_process run ctstfm:fuseseries -- MANIFEST=series.csv OUTPUT_FOLDER=fused
"""

# Post-processors must outlive the algorithm run (QGIS keeps only a pointer).
_POST_PROCESSORS = []


class DateTemporalProperties(QgsProcessingLayerPostProcessorInterface):
    """Gives a loaded raster a fixed temporal range: its day."""

    def __init__(self, date):
        super().__init__()
        self.date = date

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        start = QDateTime(QDate(self.date.year, self.date.month, self.date.day), QTime(0, 0, 0), QTimeZone.utc())
        properties = layer.temporalProperties()
        properties.setMode(RASTER_TEMPORAL_FIXED)
        properties.setFixedTemporalRange(QgsDateTimeRange(start, start.addDays(1), True, False))
        properties.setIsActive(True)


class FuseSeriesAlgorithm(CtstfmAlgorithm):
    algorithm_id = "fuseseries"
    display_name = "Fuse Time Series"
    group_key = "fusion"
    help_text = HELP
    operation = FUSE_SERIES
    INDEX = "INDEX"
    STACK = "STACK"
    OUTPUT_LAYERS = "OUTPUT_LAYERS"
    QUALITY_LAYERS = "QUALITY_LAYERS"
    QUICKLOOK_PNG = "QUICKLOOK_PNG"

    def tags(self):
        return ["ctstfm", "fusion", "time series", "spatiotemporal", "landsat", "modis", "gap filling", "temporal"]

    def add_outputs(self):
        self.addOutput(QgsProcessingOutputFile(self.INDEX, self.tr("Index of the fused dates (CSV)")))
        self.addOutput(QgsProcessingOutputRasterLayer(self.STACK, self.tr("Stack of the fused dates (VRT)")))
        self.addOutput(QgsProcessingOutputMultipleLayers(self.OUTPUT_LAYERS, self.tr("Fused dates")))
        self.addOutput(QgsProcessingOutputMultipleLayers(
            self.QUALITY_LAYERS, self.tr("Quality layers of the fused dates (not loaded)")))
        self.addOutput(QgsProcessingOutputFile(self.QUICKLOOK_PNG, self.tr("Quicklook (PNG)")))

    def process(self, parameters, context, feedback, progress):
        from model_core.series import fuse_series_from_inputs

        kwargs, _ = self.arguments(parameters, context)
        result = fuse_series_from_inputs(**kwargs, progress=progress)
        feedback.pushInfo(
            self.tr("{} date(s) fused and {} kept from an earlier run, {} x {} px, in {:.1f} s on {}.").format(
                len(result.written), len(result.kept), result.width, result.height, result.seconds, result.device
            )
        )
        for day, path in result.files.items():
            details = QgsProcessingContext.LayerDetails(f"CTSTFM fused {day}", context.project(), self.OUTPUT_LAYERS)
            processor = DateTemporalProperties(_dt.date.fromisoformat(day))
            _POST_PROCESSORS.append(processor)
            details.setPostProcessor(processor)
            context.addLayerToLoadOnCompletion(path, details)
        return {
            self.OUTPUT_FOLDER: result.out_folder,
            self.INDEX: result.index,
            self.STACK: result.stack,
            self.OUTPUT_LAYERS: list(result.files.values()),
            self.QUALITY_LAYERS: list(result.quality.values()),
            self.QUICKLOOK_PNG: result.quicklook,
        }
