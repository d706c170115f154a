"""``ctstfm:train`` — Train CTSTFM on a time series of fine/coarse pairs.

A thin face on :func:`model_core.training.train_from_inputs` (parameters: :data:`model_core.options.TRAIN`).
"""

from qgis.core import QgsProcessingOutputFile

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
- **Model to fine-tune** (optional): start from an existing model instead of from scratch.

## How it trains
Each target date T1 is predicted from the coarse image at T1 and the fine image at the nearest other date(s)
(references). The latest share of the dates (validation fraction) validates, the earlier ones train; with two
or three dates the bottom rows of every date are held out instead. Random patches, flipped and rotated, skip
mostly-nodata areas; nodata is left out of the L1 loss. After every epoch the model is validated (MAE, RMSE,
PSNR, SSIM, SAM) and the best by validation MAE is written.

## Outputs
- **Trained model** (e.g. cia.pt), plus next to it cia_training.csv (one row per epoch), cia_training.png (the
  curves) and cia.pt.checkpoint.pt, saved after every epoch: tick *Resume* to continue an interrupted run.
  Cancelling writes the best model so far.
- **Training report** (HTML) in the Results Viewer: the curves, the best epoch, the baselines the training
  measured and the verdict.

## Typical values
The paper's settings: Adam with learning rate 1e-4, batch 4, patches of 256 pixels, 150 epochs. Training is slow
on a CPU (the plugin's own model took 45 minutes on 2 cores); fine-tuning it for a few epochs on patches of
96-128 pixels is the quick start. A CUDA or Apple GPU is used with mixed precision when the device is auto.

## Example
Six Landsat/MODIS dates of one area listed in series.csv, fine-tuning the plugin's model for 20 epochs:

$ qgis_process run ctstfm:train -- MANIFEST=series.csv INIT_MODEL=default_model.pt EPOCHS=20 PATCH_SIZE=128 OUTPUT_MODEL=my_area.pt OUTPUT_HTML=my_area_report.html
"""


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    operation = TRAIN
    REPORT_CSV = "REPORT_CSV"
    REPORT_PNG = "REPORT_PNG"
    help_text = HELP

    def add_outputs(self):
        self.addOutput(QgsProcessingOutputFile(self.REPORT_CSV, self.tr("Training report (CSV, one row per epoch)")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PNG, self.tr("Training curves (PNG)")))

    def process(self, parameters, context, feedback, progress):
        from model_core.training import train_from_inputs

        kwargs, _ = self.arguments(parameters, context)
        result = train_from_inputs(**kwargs, progress=progress)
        if result.cancelled:
            feedback.pushWarning(result.message)
        outputs = {
            self.OUTPUT_MODEL: result.model_path,
            self.REPORT_CSV: result.report_csv,
            self.REPORT_PNG: result.report_png or "",
        }
        if result.report_html:
            from model_core.training.report_html import verdict

            feedback.pushInfo(verdict(result))
            outputs[self.OUTPUT_HTML] = result.report_html
        return outputs
