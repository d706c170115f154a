"""``python -m model_core temporal-difference``: fine T1 = fine T0 + (coarse T1 - coarse T0).

    python -m model_core temporal-difference --fine landsat_t0.tif --coarse0 modis_t0.tif --coarse1 modis_t1.tif \\
        --out td.tif [--tile 256 --overlap 0 --fine-bands 1,2,3,4,5,6 --coarse-bands 3,4,1,2,6,7 \\
        --resampling bilinear --scale 0.0001 --output-type input --format GTiff --json]

The options are :data:`model_core.options.TEMPORAL_DIFFERENCE`.
"""

from model_core.commands._options import add_operation_options, console_progress, operation_kwargs, report_classical
from model_core.options import TEMPORAL_DIFFERENCE


def configure(parser):
    add_operation_options(parser, TEMPORAL_DIFFERENCE)


def run(args):
    from model_core.classical_raster import temporal_difference_rasters

    result = temporal_difference_rasters(
        **operation_kwargs(args, TEMPORAL_DIFFERENCE), progress=console_progress(args, "temporal-difference")
    )
    report_classical(args, result)
    return 0
