"""The CTSTFM model file: one ``torch.save`` dict of tensors and plain data, loaded without pickle code.

Layout (``format_version`` 1)::

    {
        "format": "ctstfm-model",
        "format_version": 1,
        "config": {...},            # CTSTFMConfig.to_dict()
        "band_names": ["blue", ...],  # one per input/output band, in order
        "scale": 1e-4,               # reflectance = DN * scale
        "provenance": {...},         # training data, epochs, validation metrics, date, ... (plain data)
        "state_dict": {name: tensor},
    }

Files are only ever read with ``torch.load(..., weights_only=True)``, which refuses any
pickle that would run code, so a model file from a stranger cannot execute anything.
Files are written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash never leaves a half-written model behind under the real name.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CtstfmError
from .outputs import atomic_torch_save

FORMAT_NAME = "ctstfm-model"
FORMAT_VERSION = 1

_KEYS = ("format", "format_version", "config", "band_names", "scale", "provenance", "state_dict")


class ModelFileError(CtstfmError):
    """A model file that cannot be read or written; the message names the file and the fix."""


@dataclass
class LoadedModel:
    """A model file, read: the network (eval mode, on ``map_location``) and its metadata."""

    model: "object"  # model_core.network.CTSTFM
    config: "object"  # model_core.network.CTSTFMConfig
    band_names: list
    scale: float
    provenance: dict
    path: Path
    format_version: int = FORMAT_VERSION


@dataclass
class ModelMetadata:
    """What a model file says about itself, read without building the network."""

    config: "object"  # model_core.network.CTSTFMConfig
    band_names: list
    scale: float
    provenance: dict
    path: Path
    parameters: int
    format_version: int = FORMAT_VERSION
    state_dict: dict = field(default=None, repr=False)


# --------------------------------------------------------------------------- writing


def _plain(value, where):
    """``value`` as plain data (str/int/float/bool/None, lists, str-keyed dicts); tuples become lists."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, where) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelFileError(f"{where} has a non-text key {key!r}; use text keys only.")
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    # numpy / torch scalars (e.g. a metric computed with numpy) are turned into Python numbers.
    if hasattr(value, "item") and tuple(getattr(value, "shape", (None,))) == ():
        return _plain(value.item(), where)
    raise ModelFileError(
        f"{where} holds a {type(value).__name__}; model files keep only text, numbers, booleans, lists and "
        f"dicts there, so convert it first."
    )


def save_model(path, model_or_state, *, config, band_names, scale, provenance=None) -> Path:
    """Write a model file at ``path`` atomically and return its path.

    ``model_or_state`` is a :class:`~model_core.network.CTSTFM` or its ``state_dict()``;
    ``config`` a :class:`~model_core.network.CTSTFMConfig` (or its dict); ``band_names`` one name
    per band; ``scale`` the DN-to-reflectance factor; ``provenance`` a dict of plain data
    (training data, epochs, validation metrics, date, ...). The state dict is checked against
    the configuration before anything is written, so every saved file loads.
    """
    import torch

    from .network import CTSTFM, CTSTFMConfig

    path = Path(path)
    if isinstance(config, dict):
        config = CTSTFMConfig.from_dict(config)
    if not isinstance(config, CTSTFMConfig):
        raise TypeError(f"config must be a CTSTFMConfig or its dict, not {type(config).__name__}")
    band_names = [str(name) for name in band_names]
    if len(band_names) != config.bands:
        raise ModelFileError(
            f"Cannot write {path}: {len(band_names)} band names for a {config.bands}-band model; give one name per band."
        )
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ModelFileError(f"Cannot write {path}: scale {scale!r} is not a number; use e.g. 1e-4.") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ModelFileError(f"Cannot write {path}: scale must be a positive number (e.g. 1e-4), not {scale}.")
    provenance = _plain(dict(provenance or {}), "provenance")

    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    state = {
        str(key): value.detach().to("cpu").clone(memory_format=torch.contiguous_format) for key, value in state.items()
    }
    bad = _non_finite(state)
    if bad:
        raise ModelFileError(
            f"Cannot write {path}: weight {bad} holds NaN or infinity (training diverged); lower the learning "
            f"rate and retrain."
        )
    try:
        CTSTFM(config).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"Cannot write {path}: the weights do not fit the given configuration ({_first_line(exc)}); pass the "
            f"config the model was built with."
        ) from exc

    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "band_names": band_names,
        "scale": scale,
        "provenance": provenance,
        "state_dict": state,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"Cannot write {path}: {exc.strerror or exc}; choose a folder you can write to.") from exc
    atomic_torch_save(payload, path, error=ModelFileError)
    return path


def _non_finite(state):
    """The name of the first floating-point tensor with NaN or infinity, or None."""
    import torch

    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def _reason(exc) -> str:
    """The informative part of a torch.load error (its weights-only preamble is long and misleading here)."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text.strip():
        return "the file ends too early"
    if "Weights only load failed" in text:
        for line in text.splitlines():
            if "nsupported" in line:
                return f"not a PyTorch weights file: {line.strip()}"
        return "not a PyTorch weights file"
    return _first_line(exc)


def _first_line(exc) -> str:
    """The first sentence(s) of an exception, on one line, at most ~300 characters."""
    lines = [line.strip() for line in str(exc).strip().splitlines()[:3] if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1 and ". " in lines[0]:
        return lines[0].split(". ")[0][:300]
    return " ".join(lines)[:300]


# --------------------------------------------------------------------------- reading


def _file_kind(head):
    """What a file that is not a PyTorch file seems to be, from its first bytes."""
    if not head:
        return "an empty file"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "a TIFF image"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a PyTorch file"
    return "a text file" if all(c.isprintable() or c in "\r\n\t" for c in text) else "not a PyTorch file"


def _check_kind(path):
    """Refuse at once a file that is not a PyTorch file at all (torch.save writes a ZIP archive,
    older versions a pickle starting with protocol byte 0x80), saying what it looks like."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise ModelFileError(f"Model file {path} cannot be read ({exc.strerror or exc}); check its permissions.") from exc
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return
    raise ModelFileError(
        f"{path} is not a CTSTFM model file (it is {_file_kind(head)}); give a .pt model file written by ctstfm "
        "(training, save_model or `python -m model_core init`)."
    )


def _read_payload(path, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``, every failure turned into one clear ModelFileError."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelFileError(
            f"Model file {path} does not exist; check the path, or create one with "
            f"`python -m model_core init` or by training."
        )
    if not path.is_file():
        raise ModelFileError(f"Model file {path} is not a file; give the path of a .pt model file.")
    _check_kind(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise ModelFileError(
                f"Model file {path} contains Python code, not only weights, and was refused for safety; "
                f"use a model file written by ctstfm (save_model, training or `python -m model_core init`)."
            ) from exc
        if isinstance(exc, OSError) and not isinstance(exc, EOFError):
            raise ModelFileError(f"Model file {path} cannot be read ({exc.strerror or exc}); check its permissions.") from exc
        raise ModelFileError(
            f"Model file {path} is damaged or not a model file ({_reason(exc)}); copy or download it again, "
            f"or retrain."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        hint = ""
        if isinstance(payload, dict) and payload and all(hasattr(v, "shape") for v in payload.values()):
            hint = " (it looks like a bare state dict)"
        raise ModelFileError(
            f"{path} is not a {FORMAT_NAME} file{hint}; use a model written by ctstfm "
            f"(save_model, training or `python -m model_core init`)."
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"Model file {path} has an invalid format_version {version!r}; it is damaged, rewrite it.")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"Model file {path} uses format version {version}, newer than the {FORMAT_VERSION} this plugin reads; "
            f"update the ctstfm plugin."
        )
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise ModelFileError(f"Model file {path} lacks {', '.join(missing)}; it is damaged, rewrite or retrain it.")
    return path, payload


def _metadata(path, payload) -> ModelMetadata:
    from .network import CTSTFMConfig

    try:
        config = CTSTFMConfig.from_dict(payload["config"])
    except CtstfmError as exc:
        raise ModelFileError(f"Model file {path} has an unusable configuration: {exc}") from exc
    except TypeError as exc:
        raise ModelFileError(f"Model file {path} has an unusable configuration ({exc}); rewrite or retrain it.") from exc
    band_names = payload["band_names"]
    if not isinstance(band_names, list) or len(band_names) != config.bands or not all(isinstance(b, str) for b in band_names):
        raise ModelFileError(
            f"Model file {path} needs one band name per band ({config.bands}), got {band_names!r}; rewrite it."
        )
    scale = payload["scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ModelFileError(f"Model file {path} has an invalid scale {scale!r}; rewrite it with a positive scale.")
    provenance = payload["provenance"] if isinstance(payload["provenance"], dict) else {}
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(hasattr(v, "numel") for v in state.values()):
        raise ModelFileError(f"Model file {path} has no valid weights; rewrite or retrain it.")
    bad = _non_finite(state)
    if bad:
        raise ModelFileError(
            f"Model file {path} has NaN or infinite weights ({bad}); its training diverged, so retrain it."
        )
    return ModelMetadata(
        config=config,
        band_names=list(band_names),
        scale=float(scale),
        provenance=provenance,
        path=path,
        parameters=int(sum(v.numel() for v in state.values() if v.is_floating_point())),
        format_version=payload["format_version"],
        state_dict=state,
    )


def read_model_metadata(path) -> ModelMetadata:
    """Configuration, bands, scale, provenance and parameter count of a model file, without building the network."""
    meta = _metadata(*_read_payload(path, "cpu"))
    meta.state_dict = None
    return meta


def load_model(path, map_location="cpu") -> LoadedModel:
    """Read a model file (``weights_only`` only) and return the network in eval mode with its metadata."""
    from .network import CTSTFM

    meta = _metadata(*_read_payload(path, map_location))
    model = CTSTFM(meta.config)
    try:
        model.load_state_dict(meta.state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"Model file {meta.path}'s weights do not match its configuration ({_first_line(exc)}); the file is "
            f"damaged or was written by a different network version, so rewrite or retrain it."
        ) from exc
    model.to(map_location).eval()
    return LoadedModel(
        model=model,
        config=meta.config,
        band_names=meta.band_names,
        scale=meta.scale,
        provenance=meta.provenance,
        path=meta.path,
        format_version=meta.format_version,
    )
