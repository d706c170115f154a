"""``python -m model_core fuse``: predict the fine image at T1 with a CTSTFM model.

    python -m model_core fuse --fine landsat_t0.tif --coarse modis_t1.tif [--model model.pt] --out fused.tif \\
        [--tile 256 --overlap 32 --device auto --batch-size N --fine-bands 1,2,3,4,5,6 \\
         --coarse-bands 3,4,1,2,6,7 --resampling bilinear --output-type input --format GTiff]

The options are :data:`model_core.options.FUSE`.
"""

import json

from model_core.commands._options import add_operation_options, console_progress, operation_kwargs
from model_core.options import FUSE


def configure(parser):
    add_operation_options(parser, FUSE)


def run(args):
    from model_core.fusion import fuse

    result = fuse(**operation_kwargs(args, FUSE), progress=console_progress(args, "fuse"))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands) in "
            f"{result.seconds:.1f} s, {result.megapixels_per_second:.3f} Mpx/s on {result.device}"
        )
    return 0
