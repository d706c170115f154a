import json
import platform


def configure(parser):
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    from .. import __version__

    versions = {"model_core": __version__, "python": platform.python_version()}
    try:
        import torch

        versions["torch"] = torch.__version__
        versions["cuda_available"] = bool(torch.cuda.is_available())
    except ImportError:
        versions["torch"] = None
    try:
        from osgeo import gdal

        versions["gdal"] = gdal.__version__
    except ImportError:
        versions["gdal"] = None
    import numpy

    versions["numpy"] = numpy.__version__
    if args.json:
        print(json.dumps(versions))
    else:
        for key, value in versions.items():
            print(f"{key}: {value if value is not None else 'not installed'}")
    return 0
