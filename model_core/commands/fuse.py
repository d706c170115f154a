"""``python -m model_core fuse``: predict the fine image at T1 with a CTSTFM model.

    python -m model_core fuse --fine landsat_t0.tif --coarse modis_t1.tif --model model.pt --out fused.tif \\
        [--tile 256 --overlap 32 --device auto --batch-size N --fine-bands 1,2,3,4,5,6 \\
         --coarse-bands 3,4,1,2,6,7 --resampling bilinear --output-type input --format GTiff]
"""

import json


def configure(parser):
    parser.add_argument("--fine", required=True, help="fine image at T0 (e.g. Landsat surface reflectance x10000)")
    parser.add_argument("--coarse", required=True, help="coarse image at T1 (e.g. MODIS MOD09GA), any CRS")
    parser.add_argument("--model", required=True, help="CTSTFM model file (.pt)")
    parser.add_argument("--out", required=True, help="output raster (GeoTIFF) on the fine image's grid")
    parser.add_argument("--tile", type=int, default=256, help="tile size in fine pixels (default 256)")
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument("--batch-size", type=int, default=None, help="tiles per network call (default: auto)")
    parser.add_argument("--fine-bands", default=None, help="fine bands in the model's order, e.g. 1,2,3,4,5,6")
    parser.add_argument("--coarse-bands", default=None, help="coarse bands in the model's order, e.g. 3,4,1,2,6,7")
    parser.add_argument(
        "--resampling", default="bilinear", choices=["bilinear", "cubic", "nearest", "average"],
        help="how the coarse image is put on the fine grid (default bilinear)",
    )
    parser.add_argument(
        "--output-type", default="input", choices=["input", "float32"],
        help="'input': the fine image's data type and scale (default); 'float32': reflectance",
    )
    parser.add_argument("--format", default="GTiff", choices=["GTiff", "COG"], help="default GTiff")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from model_core.fusion import fuse
    from model_core.progress import ConsoleProgress

    result = fuse(
        args.fine,
        args.coarse,
        args.model,
        args.out,
        tile=args.tile,
        overlap=args.overlap,
        device=args.device,
        batch_size=args.batch_size,
        fine_bands=args.fine_bands,
        coarse_bands=args.coarse_bands,
        resampling=args.resampling,
        output_type=args.output_type,
        output_format=args.format,
        progress=ConsoleProgress("fuse", quiet=args.quiet or args.json),
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands) in "
            f"{result.seconds:.1f} s, {result.megapixels_per_second:.3f} Mpx/s on {result.device}"
        )
    return 0
