"""Where torch runs and at what precision: one choice for fusion, the classical methods and training.

* :func:`choose_device` / :func:`resolve_device`: the user's ``auto`` / ``cpu`` / ``cuda[:N]`` /
  ``mps`` as a device (``auto``: CUDA, then Apple's MPS, then the CPU), with a clear error where
  the device does not exist; :func:`device_note`: what the log should say about MPS.
* :func:`mixed_precision_dtype` and :func:`autocast`: bfloat16 (else float16) autocast on CUDA,
  float16 on MPS, full float32 on the CPU; :func:`grad_scaler`: the gradient scaler training
  needs for float16.
* :func:`auto_batch_size`: tiles per batch from the free GPU memory; :func:`is_out_of_memory`
  and :func:`empty_device_cache`: the GPU ran out of memory (callers halve the batch and retry).

Torch is imported inside the functions, so importing this module stays cheap.
"""

import contextlib
import os
from dataclasses import dataclass

from . import MPS_FALLBACK
from .errors import CtstfmError
from .options import DEVICES


@dataclass(frozen=True)
class DeviceAvailability:
    """What accelerators this PyTorch can use: the number of CUDA GPUs and whether Apple's MPS works."""

    cuda: int = 0
    mps: bool = False

    @classmethod
    def detect(cls):
        import torch

        mps = getattr(torch.backends, "mps", None)
        return cls(
            cuda=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            mps=bool(mps is not None and mps.is_available()),
        )


def choose_device(device="auto", available=None):
    """The device name for ``device``: ``"auto"`` takes CUDA, then Apple's MPS, then the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and ``"mps"`` are checked against ``available`` (a
    :class:`DeviceAvailability`, detected when ``None``); asking for one that is absent is a
    :class:`CtstfmError` that says what to choose instead."""
    name = str(device or "auto").strip().lower()
    if name not in ("auto", "cpu", "mps") and not name.startswith("cuda"):
        raise CtstfmError(f"Unknown device '{device}'; use one of {', '.join(DEVICES)}.")
    if name == "cpu":
        return "cpu"
    available = available or DeviceAvailability.detect()
    if name == "auto":
        return "cuda" if available.cuda else "mps" if available.mps else "cpu"
    if name == "mps":
        if not available.mps:
            raise CtstfmError(
                "The Apple GPU (mps) was asked for, but this PyTorch cannot use it (it needs a Mac with Apple "
                "silicon or an AMD GPU, macOS 12.3 or later and a PyTorch built with MPS); choose device 'auto' "
                "or 'cpu'."
            )
        return "mps"
    if not available.cuda:
        raise CtstfmError(
            "The CUDA device was asked for, but this PyTorch sees no CUDA GPU; choose device 'auto' or 'cpu', "
            "or install a CUDA build of PyTorch."
        )
    index = name.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= available.cuda):
        raise CtstfmError(f"There is no GPU {name}; this machine has {available.cuda} CUDA device(s).")
    return name


def resolve_device(device="auto", available=None):
    """A ``torch.device`` for :func:`choose_device`'s choice."""
    import torch

    return torch.device(choose_device(device, available))


def device_note(device):
    """A line for the log about ``device``'s limits, or ``None``: on MPS, whether operators it lacks
    fall back to the CPU (slower) or fail, and how to change that."""
    if torch_device_type(device) != "mps":
        return None
    if os.environ.get(MPS_FALLBACK, "0").strip() not in ("", "0"):
        return (
            f"Apple GPU (mps): operators MPS lacks run on the CPU instead ({MPS_FALLBACK}=1), which is slower "
            "but gives the same result."
        )
    return (
        f"Apple GPU (mps) without CPU fallback ({MPS_FALLBACK} is not 1): an operator MPS lacks stops the run; "
        f"set {MPS_FALLBACK}=1 before starting QGIS or Python, or choose device 'cpu'."
    )


def torch_device_type(device):
    """``"cpu"``, ``"cuda"`` or ``"mps"`` of a device or device name."""
    return str(getattr(device, "type", device)).split(":")[0]


def mixed_precision_dtype(device):
    """The autocast dtype for ``device``: on CUDA bfloat16 where supported, else float16; on
    Apple's MPS float16 (bfloat16 needs macOS 14 there); ``None`` (full float32) on the CPU.
    Fusion and training share this choice."""
    import torch

    kind = torch_device_type(device)
    if kind == "mps":
        return torch.float16
    if kind != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(amp_dtype, device="cuda"):
    """``torch.autocast`` on ``device`` (CUDA or MPS) for ``amp_dtype``, or a no-op context when it is ``None``."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=torch_device_type(device), dtype=amp_dtype)


def empty_device_cache(device):
    """Give the accelerator's cached memory back after an out-of-memory error."""
    import torch

    kind = torch_device_type(device)
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def auto_batch_size(device, tile_height, tile_width, width_channels=20):
    """Tiles per batch when none was given: 1 on CPU (batching gains nothing
    there and costs memory); on CUDA as many as about a quarter of the free GPU
    memory holds (on MPS: of the memory Metal recommends; at roughly 60 feature
    maps of ``width_channels`` per pixel in float32), between 1 and 32.
    Out-of-memory errors halve it anyway."""
    if device.type not in ("cuda", "mps"):
        return 1
    import torch

    try:
        if device.type == "mps":  # unified memory: what Metal recommends, less what it holds already
            free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        else:
            free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 (older drivers, older PyTorch)
        return 4
    per_tile = tile_height * tile_width * width_channels * 60 * 4


def grad_scaler(amp_dtype, device="cuda"):
    """Loss scaling for float16 autocast on ``device`` (CUDA or MPS): float16's small range
    underflows gradients; none for bfloat16 or full precision."""
    import torch

    if amp_dtype is None or amp_dtype == torch.bfloat16:
        return None
    return torch.amp.GradScaler(torch_device_type(device))


def is_out_of_memory(exc):
    """Whether ``exc`` is the GPU running out of memory (torch's own error, or the
    ``RuntimeError`` older versions raise)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()
