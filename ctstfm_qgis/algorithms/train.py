"""``ctstfm:train`` — Train CTSTFM on a time series of fine/coarse pairs.

A thin face on :func:`model_core.training.train_from_inputs` (parameters: :data:`model_core.options.TRAIN`).
"""

from qgis.core import QgsProcessingOutputFile, QgsProcessingOutputNumber, QgsProcessingOutputString

from model_core.options import TRAIN

from .base import CtstfmAlgorithm


HELP = """
Trains the CTSTFM network (Jiang & Shao, IEEE JSTARS 2024) on a time series of fine/coarse pairs (e.g. Landsat
30 m and MODIS 500 m, one pair per date) and writes a model file for *Spatiotemporal Fusion*.

## Inputs
- **Series**: either a manifest CSV with the columns date,fine,coarse (ISO dates, paths relative to the CSV
  allowed; an optional scene column trains on several scenes, each on its own grid), or the fine and the coarse
  layers of each date in the same order, with their dates typed as 2021-04-01,2021-05-03,... (left empty, each
  date is read from the file name: YYYY-MM-DD or YYYYMMDD).
- At least two dates; every fine image on the same grid with the same bands; each coarse image must cover its
  fine image (it is resampled onto the fine grid exactly as fusion does). With a scene column these rules hold
  within each scene, and every scene needs the same bands.
- **Band names** (optional): the fine images' bands, e.g. green,red,nir, when their band descriptions do not
  name them; the model to fine-tune is cut down to these bands.
- **Clouds** (optional): a mask column in the manifest (a cloud mask per fine date, e.g. the product's QA band
  as its own file), read by the **Cloud mask rule** (advanced: non-zero, or the product's own mask such as
  landsat-c2-qa or sentinel2-scl), as in *Fuse Time Series*. Cloudy pixels are neither input nor
  target; a quality band read as non-zero (it would mask everything) is refused. A coarse_mask column (e.g.
  MODIS state_1km, **Coarse cloud mask rule** modis-state) leaves the pixels cloudy in a target's coarse image
  out of the loss.
- **Model to fine-tune** (optional): empty = the plugin's embedded model (band-mapped).

## How it trains
Each target date T1 is predicted from the coarse image at T1 and the fine image at the nearest other date(s)
(references). The latest share of the dates (validation fraction) validates, the earlier ones train; with two
or three dates the bottom rows of every date are held out instead. Random patches, flipped and rotated, skip
mostly-nodata areas; nodata is left out of the L1 loss.

**Default recipe** (a few dates and a CPU): fine-tune the embedded model, cut down to your bands by name, in
the three-image mode (*Use the coarse image at T0*, on): each sample also gets the coarse image of its
reference date, and the model predicts a correction to the first guess fine(T0) + a x (coarse(T1) -
coarse(T0)) + b x (coarse(T1) - box33(fine(T0))): the first change cancels the two sensors' own difference,
the second has no misregistration between dates, and a and b per band are fitted on the training dates
(*Fit the change gain*, advanced), with the box each change is averaged over first (none, or 5 to 17
pixels where that fits better: coarse images delivered on the fine grid are blocky). Training starts from
whichever validates best of the model itself and the first guess, with and without the fitted gains
(*Starting point*; with two or three dates a reference must be 10 % better to replace the embedded
model), and only an epoch that beats that start by 1 % replaces it: the result is never worse on
validation than the start. Each coarse image of a training patch is shifted by its
own random sub-pixel offset (*Coarse shift*, advanced), and training stops after 5 epochs without a new
best (*Patience*, advanced): with few dates, longer training fits those dates' own change and transfers
worse to the next date. Fuse a three-image model with
*Coarse image at T0* (COARSE_T0); *Fuse Time Series* passes each reference date's coarse image by itself.
*Spatiotemporal Fusion* averages a fine-tuned model with the plugin's model by default
(MEAN_WITH_PLUGIN_MODEL): on real Landsat dates the mean beat the tuned model alone by 4-6 % MAE.
Turned off, the model needs only fine(T0) and coarse(T1), as in the paper (first guess fine(T0) +
coarse(T1) - box33(fine(T0))).
Choose training dates that changed about as much as the dates you will fuse: when the fitted gains average
below 0.35 (the coarse change between your dates was mostly noise), the log warns that the model will
under-predict a date that changed much more.
*Time budget* (MAX_MINUTES, default 15) stops training with the best model so far. *Train from scratch*
(advanced) is the paper's recipe: it needs many dates and a GPU.
A tuned model helps most for dates beyond your last fine image. To fill dates *between* fine dates, *Fuse Time
Series* checks it, alone and averaged with the plugin's model, against the plugin's model on a fine date between
two others, left out, but only on a date it was not trained on: keep one such date out with *Fine dates to keep
out of training* (KEEP_OUT, advanced); the same manifest serves both.

## Outputs
- **Trained model** (e.g. cia.pt), plus next to it cia_training.csv (the unchanged fine image and the first
  guess on the same validation windows, epoch 0 = the start, then one row per epoch), cia_training.png (the
  curves, both baselines dashed) and cia.pt.checkpoint.pt, saved after every epoch: tick *Resume* to continue
  an interrupted run. Cancelling writes the best model so far.
- The results give the validation MAE of the model, of the unchanged fine image and of the first guess, the
  improvement in percent, and the verdict the log ends with ("the model improves on the unchanged fine image
  by X % MAE", or a warning with what to try).
- **Training report** (HTML) in the Results Viewer: the curves, the best epoch, the baselines the training
  measured and the verdict.

## Typical values
Defaults are measured for a CPU (docs/benchmarks.md, few dates): patches of 64 pixels, Adam with learning rate
2e-4, batch 4, at most 150 epochs within 15 minutes. The paper's settings (from scratch, learning rate 1e-4,
patches of 256 pixels, 150 epochs) suit many dates and a GPU. A CUDA or Apple GPU is used with mixed precision
when the device is auto.

## Example
Two Landsat/MODIS dates of one area with green, red and NIR bands, listed in series.csv, 10 minutes:

$ qgis_process run ctstfm:train -- MANIFEST=series.csv BANDS=green,red,nir MAX_MINUTES=10 OUTPUT_MODEL=my_area.pt OUTPUT_HTML=my_area_report.html
$ qgis_process run ctstfm:fuse -- FINE=landsat_t0.tif COARSE=modis_t1.tif COARSE_T0=modis_t0.tif MODEL=my_area.pt OUTPUT=fused_t1.tif
"""


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    operation = TRAIN
    REPORT_CSV = "REPORT_CSV"
    REPORT_PNG = "REPORT_PNG"
    VERDICT = "VERDICT"
    # Validation MAE of the kept model and of the two baselines on the same windows.
    RESULT_NUMBERS = (
        ("VALIDATION_MAE", "Validation MAE of the trained model"),
        ("NO_CHANGE_MAE", "Validation MAE of the unchanged fine image (same windows)"),
        ("FIRST_GUESS_MAE", "Validation MAE of the first guess (same windows)"),
        ("IMPROVEMENT_PERCENT", "MAE improvement on the unchanged fine image (%)"),
    )
    help_text = HELP

    def add_outputs(self):
        self.addOutput(QgsProcessingOutputFile(self.REPORT_CSV, self.tr("Training report (CSV, one row per epoch)")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PNG, self.tr("Training curves (PNG)")))
        for name, label in self.RESULT_NUMBERS:
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))
        self.addOutput(QgsProcessingOutputString(self.VERDICT, self.tr("How the model compares with the baselines")))

    def process(self, parameters, context, feedback, progress):
        from model_core.training import train_from_inputs

        kwargs, _ = self.arguments(parameters, context)
        result = train_from_inputs(**kwargs, progress=progress)
        verdict = result.message.splitlines()[-1]
        if result.cancelled or verdict.startswith("WARNING") or result.notes:
            feedback.pushWarning(result.message)
        no_change = result.baselines.get("no_change", {}).get("mae")
        outputs = {
            self.OUTPUT_MODEL: result.model_path,
            self.REPORT_CSV: result.report_csv,
            self.REPORT_PNG: result.report_png or "",
            "VALIDATION_MAE": result.best_metrics.get("mae"),
            "NO_CHANGE_MAE": no_change,
            "FIRST_GUESS_MAE": result.baselines.get("first_guess", {}).get("mae"),
            "IMPROVEMENT_PERCENT": 100.0 * (1.0 - result.best_metrics["mae"] / no_change) if no_change else None,
            self.VERDICT: verdict,
        }
        if result.report_html:
            from model_core.training.report_html import verdict

            feedback.pushInfo(verdict(result))
            outputs[self.OUTPUT_HTML] = result.report_html
        return outputs
