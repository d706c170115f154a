"""``python -m model_core starfm``: STARFM (Gao et al. 2006) from one fine/coarse pair at T0 and a coarse T1.

    python -m model_core starfm --fine landsat_t0.tif --coarse0 modis_t0.tif --coarse1 modis_t1.tif --out starfm.tif \\
        [--window 31 --classes 40 --fine-uncertainty 0.002 --coarse-uncertainty 0.002 --tile 256 \\
         --overlap 30 --device auto ...]

The options are :data:`model_core.options.STARFM`.
"""

from model_core.commands._options import add_operation_options, console_progress, operation_kwargs, report_classical
from model_core.options import STARFM


def configure(parser):
    add_operation_options(parser, STARFM)


def run(args):
    from model_core.classical_raster import starfm_rasters

    result = starfm_rasters(**operation_kwargs(args, STARFM), progress=console_progress(args, "starfm"))
    report_classical(args, result)
    return 0
