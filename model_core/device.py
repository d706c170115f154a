"""Where torch runs and at what precision: one choice for fusion, the classical methods and training.

* :func:`resolve_device`: the user's ``auto`` / ``cpu`` / ``cuda[:N]`` as a ``torch.device``,
  with a clear error where the device does not exist.
* :func:`mixed_precision_dtype` and :func:`autocast`: bfloat16 (else float16) autocast on CUDA,
  full float32 on the CPU; :func:`grad_scaler`: the gradient scaler training needs for float16.
* :func:`auto_batch_size`: tiles per batch from the free GPU memory; :func:`is_out_of_memory`:
  whether an exception is the GPU running out of memory (callers halve the batch and retry).

Torch is imported inside the functions, so importing this module stays cheap.
"""

import contextlib

from .errors import CtstfmError
from .options import DEVICES


def resolve_device(device="auto"):
    """A ``torch.device`` for ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``; asking for CUDA where there is none is a
    :class:`CtstfmError`."""
    import torch

    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CtstfmError(
                "The CUDA device was asked for, but this PyTorch sees no CUDA GPU "
                f"(torch {torch.__version__}); choose device 'auto' or 'cpu', or install a CUDA build of PyTorch."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CtstfmError(f"There is no GPU {name}; this machine has {torch.cuda.device_count()} CUDA device(s).")
        return dev
    raise CtstfmError(f"Unknown device '{device}'; use one of {', '.join(DEVICES)}.")


def mixed_precision_dtype(device):
    """The autocast dtype for ``device``: bfloat16 on CUDA GPUs that support it, else
    float16; ``None`` (full float32) on the CPU. Fusion and training share this choice."""
    import torch

    if not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(amp_dtype):
    """``torch.autocast`` on CUDA for ``amp_dtype``, or a no-op context when it is ``None``."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=amp_dtype)


def grad_scaler(amp_dtype):
    """The gradient scaler training needs: one for float16 autocast (its small range
    underflows gradients), none for bfloat16 or full precision."""
    import torch

    if amp_dtype is None or amp_dtype == torch.bfloat16:
        return None
    return torch.amp.GradScaler("cuda")


def auto_batch_size(device, tile_height, tile_width, width_channels=20):
    """Tiles per batch when none was given: 1 on CPU (batching gains nothing
    there and costs memory); on CUDA as many as about a quarter of the free GPU
    memory holds (at roughly 60 feature maps of ``width_channels`` per pixel in
    float32), between 1 and 32. Out-of-memory errors halve it anyway."""
    if device.type != "cuda":
        return 1
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 (older drivers)
        return 4
    per_tile = tile_height * tile_width * width_channels * 60 * 4
    return int(max(1, min(32, (free // 4) // max(per_tile, 1))))


def is_out_of_memory(exc):
    """Whether ``exc`` is the GPU running out of memory (torch's own error, or the
    ``RuntimeError`` older versions raise)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()

