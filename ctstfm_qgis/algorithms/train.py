"""``ctstfm:train`` — Train CTSTFM on a time series of fine/coarse pairs.

A thin face on :func:`model_core.training.train_from_inputs` (parameters: :data:`model_core.options.TRAIN`).
"""

from qgis.core import QgsProcessingOutputFile

from model_core.options import TRAIN

from .base import CtstfmAlgorithm


class TrainAlgorithm(CtstfmAlgorithm):
    algorithm_id = "train"
    display_name = "Train CTSTFM"
    group_key = "training"
    operation = TRAIN
    REPORT_CSV = "REPORT_CSV"
    REPORT_PNG = "REPORT_PNG"
    help_text = (
        "Trains the CTSTFM network (Jiang & Shao, IEEE JSTARS 2024) on a time series of fine/coarse pairs "
        "(e.g. Landsat 30 m and MODIS 500 m, one pair per date) and writes a model file for "
        "'Spatiotemporal Fusion'.\n\n"
        "Data: either a manifest CSV with the columns date,fine,coarse (ISO dates, paths relative to the CSV "
        "allowed; an optional scene column trains on several scenes, each on its own grid), or the fine and "
        "the coarse layers of each date, in the same order, with their dates typed as 2021-04-01,2021-05-03,... "
        "(left empty, each date is read from the file name: YYYY-MM-DD or YYYYMMDD). At least two dates; every "
        "fine image on the same grid with the same bands; each coarse image must cover its fine image (it is "
        "resampled onto the fine grid exactly as fusion does). With a scene column these rules hold within each "
        "scene, and every scene needs the same bands.\n\n"
        "Each target date T1 is predicted from the coarse image at T1 and the fine image at the nearest "
        "other date(s) (REFERENCES). The latest VALIDATION_FRACTION of the dates validates, the earlier "
        "ones train (with two or three dates, the bottom rows of every date are held out instead). Random "
        "patches, flipped and rotated, skip mostly-nodata areas; nodata is left out of the L1 loss. Adam "
        "with the paper's settings (learning rate 1e-4, batch 4, 150 epochs); after every epoch the model is "
        "validated (MAE, RMSE, PSNR, SSIM, SAM) and the best by validation MAE is written.\n\n"
        "Next to the model (e.g. cia.pt): cia_training.csv (one row per epoch), cia_training.png (curves) and "
        "cia.pt.checkpoint.pt, saved after every epoch: tick 'Resume' to continue an interrupted run. "
        "Cancelling writes the best model so far. Training is slow on a CPU; a CUDA GPU is used with mixed "
        "precision when the device is auto or cuda."
    )

    def add_outputs(self):
        self.addOutput(QgsProcessingOutputFile(self.REPORT_CSV, self.tr("Training report (CSV, one row per epoch)")))
        self.addOutput(QgsProcessingOutputFile(self.REPORT_PNG, self.tr("Training curves (PNG)")))

    def process(self, parameters, context, feedback, progress):
        from model_core.training import train_from_inputs

        kwargs, _ = self.arguments(parameters, context)
        result = train_from_inputs(**kwargs, progress=progress)
        if result.cancelled:
            feedback.pushWarning(result.message)
        return {
            self.OUTPUT_MODEL: result.model_path,
            self.REPORT_CSV: result.report_csv,
            self.REPORT_PNG: result.report_png or "",
        }
