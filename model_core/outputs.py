"""The one output-path rule, and atomic writes.

Every file the core writes (fused and classical rasters, assessment error maps,
tables and HTML pages, a trained model, its checkpoint and its CSV/PNG report)
goes through :func:`check_outputs` before any work starts:

* each output can be created (a path is given, it is not a folder, its folder
  exists and a file can be made there);
* no output is one of the run's inputs: paths are compared after resolving
  symbolic links (``os.path.realpath``) and, for files that exist, with
  ``os.path.samefile`` (hard links, case-insensitive file systems), so
  ``./a.tif``, ``/abs/a.tif`` and a link to it are the same file. The inputs
  include every raster a training manifest lists, not just the manifest;
* no two outputs of one run are the same file (a model's report CSV may not
  land on another output either);
* a raster written as a GeoTIFF has a GeoTIFF name (``.tif``/``.tiff``), so no
  viewer is fooled by a GeoTIFF called ``.jpg``, ``.png`` or nothing.

:func:`atomic_open` and its short forms :func:`atomic_write_text`,
:func:`atomic_write_bytes` and :func:`atomic_torch_save` write to a hidden
temporary file in the destination's folder and rename it onto the destination
only when everything was written, so a crash, a full disk or a cancel never
leaves a half-written file under the real name (rasters do the same through
:class:`~model_core.raster.RasterWriter`, which needs GDAL's own file handling).
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager

from .errors import CtstfmError


#: A GDAL subdataset name, e.g. ``HDF4_EOS:EOS_GRID:"MOD09GA.hdf":MODIS_Grid_500m_2D:sur_refl_b01_1`` or
#: ``NETCDF:"file.nc":variable`` (what QGIS hands over for a layer of one subdataset); group 1 is the file.
SUBDATASET_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*(?::[A-Za-z0-9_]+)*:"([^"]+)"')


def file_of(path):
    """The file behind ``path``: itself, or the file a subdataset name points into."""
    match = SUBDATASET_NAME.match(str(path))
    return match.group(1) if match else str(path)


def _is_vsi(path):
    return str(path).startswith("/vsi")


def _real(path):
    return str(path) if _is_vsi(path) else os.path.realpath(os.path.expanduser(str(path)))


def same_file(a, b):
    """True when two paths name the same file (links resolved; existing files compared by inode; a subdataset
    name stands for the file it is in)."""
    a, b = file_of(a), file_of(b)
    if _real(a) == _real(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path, what="output"):
    """The absolute path of ``path``; :class:`CtstfmError` unless a file can be created there.

    Checks before any work: a path is given, is not a folder, its folder exists
    and a file can be created there (by creating and removing an empty one).
    """
    if path is None or str(path).strip() == "":
        raise CtstfmError(f"No {what} file was given; choose where to write the result.")
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        raise CtstfmError(f"The {what} '{path}' is a folder; give a file name.")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise CtstfmError(f"The folder of the {what} '{folder}' does not exist; create it or choose another path.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CtstfmError(f"The {what} '{path}' exists and cannot be overwritten; choose another path.")
    probe = os.path.join(folder, f".ctstfm-probe-{uuid.uuid4().hex}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise CtstfmError(
            f"Cannot write into the folder '{folder}' ({exc.strerror}); choose a folder you can write to."
        ) from None
    return path


GEOTIFF_EXTENSIONS = (".tif", ".tiff")


def check_geotiff_name(path, what="output"):
    """Raise :class:`CtstfmError` unless ``path`` ends in .tif or .tiff (any case)."""
    if os.path.splitext(str(path))[1].lower() not in GEOTIFF_EXTENSIONS:
        raise CtstfmError(
            f"The {what} '{path}' must be a GeoTIFF file name ending in .tif (it is written as a GeoTIFF); "
            "change its extension to .tif."
        )


def check_outputs(outputs, inputs, geotiffs=()):
    """Check every output of one run against the rule above; returns ``{what: absolute path}``.

    ``outputs``: ``{what: path}`` of the files the run will write (empty paths are
    skipped), e.g. ``{"output model": "m.pt", "training report": "m_training.csv"}``.
    ``inputs``: ``{what: path}`` of every file it reads (empty paths skipped).
    ``geotiffs``: the ``what`` of the outputs written as GeoTIFFs.
    Raises :class:`CtstfmError` naming both files before anything is written.
    """
    checked = {}
    for what, path in outputs.items():
        if path is None or str(path).strip() == "":
            continue
        if what in geotiffs:
            check_geotiff_name(path, what)
        path = check_writable(path, what)
        for name, source in inputs.items():
            if source and str(source).strip() and same_file(source, path):
                raise CtstfmError(
                    f"The {what} '{path}' is the {name}, one of the inputs; writing it would destroy that input, "
                    "so choose another file name."
                )
        for other, other_path in checked.items():
            if same_file(other_path, path):
                raise CtstfmError(
                    f"The {what} '{path}' is also the {other} of this run; give each output its own file name."
                )
        checked[what] = path
    return checked


def check_output(path, inputs, what="output", geotiff=False):
    """:func:`check_outputs` for a run with one output; returns its absolute path."""
    return check_outputs({what: path}, inputs, (what,) if geotiff else ())[what]


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_name(path):
    """A hidden temporary file name next to ``path`` (same folder, so the final rename is atomic)."""
    folder, name = os.path.split(os.path.abspath(str(path)))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


@contextmanager
def atomic_open(path, mode="wb", *, encoding=None, newline=None, error=CtstfmError):
    """Open a temporary file beside ``path``; on leaving the block without an error it is
    synced and renamed onto ``path`` (usual permissions), otherwise removed. A failing
    write (disk full, permissions) raises ``error`` (a :class:`CtstfmError` class) naming
    the file."""
    path = os.path.abspath(str(path))
    temp = temporary_name(path)
    try:
        with open(temp, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except OSError as exc:
        _remove_quietly(temp)
        raise error(
            f"Writing '{path}' failed ({exc.strerror or exc}); free some space or choose a folder you can write to."
        ) from exc
    except BaseException:
        _remove_quietly(temp)
        raise


def atomic_write_text(path, text, *, error=CtstfmError):
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding="utf-8", newline="", error=error) as handle:
        handle.write(text)
    return str(path)


def atomic_write_bytes(path, data, *, error=CtstfmError):
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb", error=error) as handle:
        handle.write(data)
    return str(path)


def atomic_torch_save(obj, path, *, error=CtstfmError):
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_open(path, "wb", error=error) as handle:
        torch.save(obj, handle)
    return str(path)
