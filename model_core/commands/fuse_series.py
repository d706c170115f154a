"""``python -m model_core fuse-series``: a fine image at every target date of a time series.

    python -m model_core fuse-series --manifest series.csv --out fused/ [--targets missing|all|step \\
        --start 2021-04-01 --end 2021-10-01 --every-days 8 --references 2 --max-gap-days 64 --quicklook]
    python -m model_core fuse-series --fine l_2021-04-01.tif l_2021-06-04.tif \\
        --coarse m_2021-04-17.tif m_2021-05-03.tif --out fused/

The manifest is a CSV ``date,fine,coarse[,mask]`` in which either path may be empty. Ctrl-C keeps the
dates already finished; the same command again resumes. Under ``torchrun --nproc_per_node=K -m model_core
fuse-series ...`` the K ranks share the dates (docs/scale-out.md). The options are
:data:`model_core.options.FUSE_SERIES`.
"""

import json

from model_core.commands._options import add_operation_options, console_progress, operation_kwargs
from model_core.options import FUSE_SERIES


def configure(parser):
    add_operation_options(parser, FUSE_SERIES)


def run(args):
    from model_core.series import fuse_series_from_inputs

    progress = console_progress(args, "fuse-series")
    result = fuse_series_from_inputs(**operation_kwargs(args, FUSE_SERIES), progress=progress)
    if result is None:
        return 0  # another rank than 0 under torchrun: rank 0 prints the whole job's result
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"{len(result.written)} date(s) fused, {len(result.kept)} kept from an earlier run, into "
            f"{result.out_folder} ({result.width} x {result.height} px, {result.bands} bands) in "
            f"{result.seconds:.1f} s on {result.device}; index {result.index}, stack {result.stack}"
        )
    return 0
