"""``python -m model_core fuse``: predict the fine image at T1 with a CTSTFM model.

    python -m model_core fuse --fine landsat_t0.tif --coarse modis_t1.tif --model model.pt --out fused.tif \\
        [--coarse-t0 modis_t0.tif --bands green,red,nir --tile 256 --overlap 32 --device auto --batch-size N \\
         --fine-bands 1,2,3,4,5,6 --coarse-bands 3,4,1,2,6,7 --resampling bilinear --output-type input --format GTiff]
"""

import json

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
    parser.add_argument(
        "--coarse-t0", default=None,
        help="coarse image at T0 (the fine image's date), any CRS: used by three-image models",
    )
    parser.add_argument(
        "--bands", default=None,
        help="names of the fine image's bands in use, e.g. green,red,nir (default: its band descriptions)",
    )
    parser.add_argument("--out", required=True, help="output raster (GeoTIFF) on the fine image's grid")
    add_tiling_options(parser, 32, "overlap between tiles in pixels (default 32)")
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per network call (default: auto)")
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
        progress=console_progress(args, "fuse"),
        coarse_t0_path=args.coarse_t0,
        bands=args.bands,
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
