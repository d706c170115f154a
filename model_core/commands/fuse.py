"""``python -m model_core fuse``: predict the fine image at T1 with a CTSTFM model.

    python -m model_core fuse --fine landsat_t0.tif --coarse modis_t1.tif --model model.pt --out fused.tif \\
        [--tile 256 --overlap 32 --device auto --batch-size N --fine-bands 1,2,3,4,5,6 \\
         --coarse-bands 3,4,1,2,6,7 --resampling bilinear --output-type input --format GTiff \\
         --inference auto --threads 0]
"""

import json

# model_core.inference.PATHS, repeated so that --help answers without importing torch
INFERENCE_PATHS = ("auto", "eager", "exact", "bf16", "compile", "compile-bf16", "int8")

from model_core.commands._options import (
    add_band_options,
    add_device_option,
    add_output_options,
    add_report_options,
    add_resampling_option,
    add_tiling_options,
    console_progress,
    fusion_kwargs,
)


def configure(parser):
    parser.add_argument("--fine", required=True, help="fine image at T0 (e.g. Landsat surface reflectance x10000)")
    parser.add_argument("--coarse", required=True, help="coarse image at T1 (e.g. MODIS MOD09GA), any CRS")
    parser.add_argument("--model", required=True, help="CTSTFM model file (.pt)")
    parser.add_argument("--out", required=True, help="output raster (GeoTIFF) on the fine image's grid")
    add_tiling_options(parser, 32, "overlap between tiles in pixels (default 32)")
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per network call (default: auto)")
    parser.add_argument(
        "--inference", default="auto", choices=list(INFERENCE_PATHS),
        help="CPU inference path (default auto: the fastest that passed the accuracy check on this CPU; "
             "eager: the network as trained, fp32)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default 0: one per physical core)"
    )
    add_band_options(
        parser,
        "fine bands in the model's order, e.g. 1,2,3,4,5,6",
        "coarse bands in the model's order, e.g. 3,4,1,2,6,7",
    )
    add_resampling_option(parser, "how the coarse image is put on the fine grid (default bilinear)")
    add_output_options(parser)
    add_report_options(parser)


def run(args):
    from model_core.fusion import fuse

    result = fuse(
        args.fine,
        args.coarse,
        args.model,
        args.out,
        device=args.device,
        batch_size=args.batch_size,
        inference=args.inference,
        threads=args.threads,
        progress=console_progress(args, "fuse"),
        **fusion_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands) in "
            f"{result.seconds:.1f} s, {result.megapixels_per_second:.3f} Mpx/s on {result.device}"
        )
    return 0
