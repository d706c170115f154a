"""The command-line face of :mod:`model_core.options`: argparse options from an operation's
spec, and the core function's keyword arguments back from the parsed arguments.

Light on imports on purpose (no torch, no GDAL): ``--help`` answers at once.
"""

import argparse
import json

#: Options of the command line itself (how results are shown), not of the core function.
REPORT_FLAGS = ("--json", "--quiet")


def _ranged(kind, option):
    """An argparse ``type`` that converts and checks the option's range with a readable message."""
    convert = int if kind == "int" else float

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind == 'int' else 'a number'}")
        if option.minimum is not None and value < option.minimum and value != option.unset:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {option.minimum:g}")
        if option.maximum is not None and value > option.maximum:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum {option.maximum:g}")
        return value

    parse.__name__ = kind
    return parse


def _help(option):
    """The option's help as argparse prints it: with its default, and ``%`` doubled (argparse %-formats help)."""
    shown = option.shown_default
    text = option.help.replace("%", "%%")
    if option.kind in ("bool", "output_raster", "output_file", "output_folder") or shown is None:
        return text
    return f"{text} (default {shown:g})" if isinstance(shown, float) else f"{text} (default {shown})"


def add_option(parser, option):
    """One :class:`~model_core.options.Option` as an argparse option (``dest`` is the core's name)."""
    kwargs = dict(dest=option.name, help=_help(option))
    kind = option.kind
    if kind in ("int", "float"):
        kwargs.update(type=_ranged(kind, option), default=option.shown_default)
    elif kind == "bool":
        # An option on by default is switched off with --no-<name>.
        kwargs.update(action=argparse.BooleanOptionalAction if option.default else "store_true",
                      default=bool(option.default))
    elif kind == "choice":
        kwargs.update(choices=list(option.choices), default=option.default)
    elif kind == "rasters":
        kwargs.update(nargs="+", metavar="TIF")
    elif kind == "files":
        kwargs.update(action="append", metavar=option.file_filter.split(" ")[0] or "FILE")
    else:  # str and single paths
        kwargs.update(default=option.default)
        if kind in ("raster", "output_raster"):
            kwargs.update(metavar="TIF")
        elif kind in ("file", "output_file"):
            kwargs.update(metavar=(option.extension or option.file_filter.split(" ")[0] or "FILE").upper())
        elif kind == "output_folder":
            kwargs.update(metavar="DIR")
    if option.required:
        kwargs.update(required=True)
    parser.add_argument(option.cli, **kwargs)


def add_operation_options(parser, operation):
    """Every option of ``operation`` (:mod:`model_core.options`) plus ``--json`` and ``--quiet``."""
    for option in operation.options:
        add_option(parser, option)
    add_report_options(parser)


def operation_kwargs(args, operation):
    """The core function's keyword arguments from arguments parsed by :func:`add_operation_options`."""
    return {option.name: option.to_core(getattr(args, option.name)) for option in operation.options}


def add_report_options(parser):
    """``--json`` and ``--quiet``."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def console_progress(args, label):
    """The progress bar of a command with :func:`add_report_options` (none with ``--quiet`` or ``--json``)."""
    from model_core.progress import ConsoleProgress

    return ConsoleProgress(label, quiet=args.quiet or args.json)


def report_classical(args, result):
    """Print a :class:`~model_core.raster_job.RasterResult` (as JSON with ``--json``)."""
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(
            f"wrote {result.out_path} ({result.width} x {result.height} px, {result.bands} bands, {result.method}) "
            f"in {result.seconds:.1f} s"
        )
