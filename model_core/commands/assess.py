"""``python -m model_core assess``: accuracy of a predicted fine image against a reference.

    python -m model_core assess --pred fused.tif --ref landsat_t1.tif [--mask mask.tif] \\
        [--error-map error.tif --csv metrics.csv --html report.html --bands 1:1,2:2 --scale 0.0001 --json]

The options are :data:`model_core.options.ASSESS`.
"""

import json

from model_core.commands._options import add_operation_options, console_progress, operation_kwargs
from model_core.options import ASSESS


def configure(parser):
    add_operation_options(parser, ASSESS)


def run(args):
    from model_core.assess import assess, format_summary, json_safe

    result = assess(**operation_kwargs(args, ASSESS), progress=console_progress(args, "assess"))
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        print(format_summary(result))
        for key, path in result["files"].items():
            print(f"wrote {path}")
    return 0
