"""Fast CPU inference paths for CTSTFM, each behind one switch, each checked against fp32 eager.

A *path* turns a trained :class:`~model_core.network.CTSTFM` into the callable the tiles go
through (:func:`prepare`); :data:`PATHS` lists them:

``eager``
    the network as trained, fp32 (the reference every other path is checked against).
``exact``
    inference-only algebra that changes nothing but float rounding (:func:`fold_for_inference`):
    MKSB's three kernels summed once; in CETB/CFTB the value 1x1 convolution, the attention
    matrix and the output 1x1 convolution multiplied into one per-tile channel mix (plus CFTB's
    skip, folded in as an identity), and the cosine attention from Gram matrices; the remaining
    1x1 convolutions as one matrix product over the channels; MKCB's pooling and MKSB's softmax
    on a pixels x channels view; the memory layout (channels-last or NCHW) chosen per CPU by a
    quick measurement (:func:`measure_layouts`).
``bf16``
    ``exact`` under bfloat16 autocast; only offered on CPUs with native bf16 (``avx512_bf16`` or
    ``amx_bf16``), elsewhere bf16 is emulated and slower.
``compile``, ``compile-bf16``
    ``exact`` (fp32 or bf16 autocast) through ``torch.compile`` (inductor with frozen weights, so
    oneDNN fuses convolutions with their activations); needs a C++ compiler. Compiling takes tens
    of seconds once per job; a failure falls back silently to ``exact``/``bf16`` eager.
``int8``
    post-training int8 quantization of the convolutions (PT2E, ``X86InductorQuantizer``) calibrated
    on tiles of the bundled sample's other date pair, then compiled; needs ``torchao`` and a C++
    compiler (``avx512_vnni``/``amx_int8`` make it fast).

``auto`` (the default) picks, per CPU, the path with the least time for the job among those
whose accuracy passed the gate: the MAE against the true fine image of the bundled sample changed
by less than :data:`MAE_GATE` relative to ``eager``. The measurements (ms per tile, setup seconds,
accuracy) are made once per CPU model, torch version and model (configuration and weights), and cached as JSON in the
user's cache folder (:func:`cache_file`); a corrupt cache is ignored and measured again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CtstfmError
from .options import INFERENCE_PATHS
from .paths import SAMPLE_DIR

PATHS = INFERENCE_PATHS
DEFAULT_PATH = "auto"
MAE_GATE = 0.01  # a fast path may change the sample's MAE by less than 1 %
LAYOUTS = ("channels_last", "contiguous")
CACHE_VERSION = 1
# Paths whose setup (compiling) costs tens of seconds: auto measures them only for jobs of at
# least this many tiles, and picks one only where setup + tiles x ms beats the eager paths.
COMPILED_PATHS = ("compile", "compile-bf16", "int8")
MIN_TILES_TO_COMPILE = 200  # a 3000 x 3000 px raster: minutes of network time

# The bundled sample's test pair: predict the fine image at T1 from the fine image at T0 and the coarse at T1.
SAMPLE_T0, SAMPLE_T1 = "2021-12-01", "2022-01-02"
# Its other pair, for calibrating int8 on data of the model's kind without seeing the test pair.
CALIBRATION_T0, CALIBRATION_T1 = "2022-01-02", "2022-02-03"


class PathUnavailable(CtstfmError):
    """A fast path this machine cannot run (no compiler, no native bf16, no torchao, compile failed)."""


# --------------------------------------------------------------------------- the machine


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo`` on Linux, the platform's processor name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags():
    """The CPU's feature flags (``/proc/cpuinfo``); empty where the system does not list them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_native_bf16(flags=None):
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX); elsewhere it is emulated."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def has_cxx_compiler():
    """True when a C++ compiler that inductor can use is on the PATH."""
    candidates = [os.environ.get("CXX", "")] + ["g++", "c++", "clang++"]
    if sys.platform == "win32":
        candidates.append("cl")
    return any(name and shutil.which(name) for name in candidates)


def has_int8_quantizer():
    """True when PT2E quantization with the x86 inductor quantizer can be imported (``torchao``)."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: F401
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401
    except Exception:  # noqa: BLE001 (any import problem means: not available)
        return False
    return True


def available_paths():
    """The concrete paths (not ``auto``) this machine can run, fastest-to-set-up first."""
    paths = ["eager", "exact"]
    bf16 = has_native_bf16()
    if bf16:
        paths.append("bf16")
    if has_cxx_compiler():
        paths.append("compile")
        if bf16:
            paths.append("compile-bf16")
        if has_int8_quantizer():
            paths.append("int8")
    return paths


def check_path(path):
    """Raise :class:`CtstfmError` unless ``path`` is one of :data:`PATHS`."""
    if path not in PATHS:
        raise CtstfmError(f"Unknown inference path '{path}'; use one of {', '.join(PATHS)}.")


# --------------------------------------------------------------------------- exact inference algebra


def _nhwc(x):
    """``x`` ``(B, C, H, W)`` as ``(B, H*W, C)`` pixels x channels: a view for channels-last tensors."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _from_nhwc(y, like):
    """``(B, H*W, C)`` back to ``(B, C, H, W)`` with ``like``'s height and width (channels-last strides)."""
    b, _, h, w = like.shape
    return y.reshape(b, h, w, y.shape[-1]).permute(0, 3, 1, 2)


def _channels_last(x):
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def channel_mix(x, matrix, bias):
    """A 1x1 convolution as one matrix product over the channels, in ``x``'s own layout.

    ``matrix`` ``(out, C)`` (shared) or ``(B, out, C)`` (one per tile); ``bias`` ``(out,)`` or
    ``(B, out)``. For channels-last ``x`` the pixels x channels view multiplies without a copy;
    oneDNN's general convolution adds a slow broadcast of the bias for so few channels.
    """
    per_tile = matrix.dim() == 3
    if _channels_last(x):
        pixels = _nhwc(x)
        if per_tile:
            out = torch.baddbmm(bias.unsqueeze(1), pixels, matrix.transpose(1, 2))
        else:
            out = torch.addmm(bias, pixels.reshape(-1, pixels.shape[-1]), matrix.t()).reshape(
                pixels.shape[0], pixels.shape[1], -1)
        return _from_nhwc(out, x)
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    if not per_tile:
        matrix, bias = matrix.expand(b, -1, -1), bias.expand(b, -1)
    return torch.baddbmm(bias.unsqueeze(2), matrix, flat).reshape(b, -1, h, w)


def _pixels_by_channels(x):
    """``(B, H*W, C)``: a view for channels-last ``x``, a transposed view of ``(B, C, H*W)`` otherwise."""
    if _channels_last(x):
        return _nhwc(x)
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)


def channel_attention(q, k, heads, temperature):
    """:func:`~model_core.network.attention_weights` for tensors in any layout, as a ``(B, N, N)``
    block-diagonal matrix (one ``d x d`` block per head) ready to multiply with other channel mixes.

    ``normalize(q) normalize(k)^T`` is computed as ``(q k^T) / (|q| |k|)``: three small Gram
    matrices instead of two full-resolution divisions (the same cosines up to rounding).
    """
    b, n = q.shape[:2]
    d = n // heads
    qp, kp = _pixels_by_channels(q), _pixels_by_channels(k)
    gram = qp.transpose(1, 2) @ kp  # (B, N, N): every channel pair, across heads too
    eps = 1e-12  # F.normalize's floor on the norm
    q_norm = torch.diagonal(qp.transpose(1, 2) @ qp, dim1=1, dim2=2).sqrt().clamp(min=eps)
    k_norm = torch.diagonal(kp.transpose(1, 2) @ kp, dim1=1, dim2=2).sqrt().clamp(min=eps)
    cosines = gram / (q_norm.unsqueeze(2) * k_norm.unsqueeze(1))
    blocks = torch.stack([cosines[:, h * d:(h + 1) * d, h * d:(h + 1) * d] for h in range(heads)], dim=1)
    weights = torch.softmax(blocks * temperature, dim=-1)  # (B, heads, d, d)
    if heads == 1:
        return weights[:, 0]
    return torch.stack([torch.block_diag(*per_head) for per_head in weights])


def _linear_parts(conv, rows=None):
    """A 1x1 convolution's ``(out, in)`` matrix and bias (only output channels ``rows``)."""
    weight, bias = conv.weight.detach().flatten(1), conv.bias.detach()
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    return weight.contiguous(), bias.contiguous()


def _split_qk(x, matrix, bias, n):
    qk = channel_mix(x, matrix, bias)
    return qk[:, :n], qk[:, n:]


def _fold_attention(proj, attention, value, identity=False):
    """``proj(attention @ value(x)) [+ x]`` as one per-tile ``(matrix, bias)`` over ``x``'s channels."""
    p, pb = proj
    v, vb = value
    mixed = p @ attention  # (B, N, N)
    matrix = mixed @ v
    bias = (mixed @ vb.unsqueeze(-1)).squeeze(-1) + pb
    if identity:
        matrix = matrix + torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    return matrix, bias


class FoldedMKSB(nn.Module):
    """:class:`~model_core.network.MKSB` with eq. 11's three kernels summed once, not every call."""

    def __init__(self, mksb):
        super().__init__()
        from .network import multi_kernel_weight

        weight, bias = multi_kernel_weight(mksb.convs)
        self.summed = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2)
        self.summed.weight.data.copy_(weight.detach())
        self.summed.bias.data.copy_(bias.detach())
        self.brb = mksb.brb

    def forward(self, f):
        s = self.brb(self.summed(f))
        b, n, h, w = s.shape
        if _channels_last(s):  # softmax over the pixels of each channel, without leaving channels-last
            weights = _from_nhwc(torch.softmax(_nhwc(s), dim=1), s)
        else:
            weights = torch.softmax(s.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)
        return weights * (h * w) * f  # eq. 12


class FoldedMKCB(nn.Module):
    """:class:`~model_core.network.MKCB` with eq. 8's pooling over a pixels x channels view
    (``torch.max`` over pixels is ~3x faster than ``amax`` over two channels-last axes)."""

    def __init__(self, mkcb):
        super().__init__()
        self.convs, self.act = mkcb.convs, mkcb.act
        self.conv3x3_centre, self.conv1x1 = mkcb.conv3x3_centre, mkcb.conv1x1

    def forward(self, f):
        pooled = []
        for conv in self.convs:  # eq. 7 (concatenation after pooling) and eq. 8
            y = _pixels_by_channels(conv(f))
            pooled.append(y.mean(dim=1) + torch.max(y, dim=1).values)
        f_pool = torch.cat(pooled, dim=1)[:, :, None, None]
        f_weight = torch.sigmoid(self.conv1x1(self.act(self.conv3x3_centre(f_pool))))  # eq. 9
        return f_weight * f  # eq. 10


class FoldedCETB(nn.Module):
    """:class:`~model_core.network.CETB` with ``proj(attention @ value(x))`` as one per-tile channel mix.

    Q and K come from the first 2N rows of the QKV convolution; V is never computed at full
    resolution: the value rows, the ``d x d`` attention matrix and the output projection are
    multiplied (N x N matrices, a few microseconds) and applied to the normalised stream once.
    """

    def __init__(self, cetb):
        super().__init__()
        n = cetb.proj_c.weight.shape[0]
        self.n, self.heads = n, cetb.heads
        self.norm_c, self.norm_f = cetb.norm_c, cetb.norm_f
        self.brb_c, self.brb_f = cetb.brb_c, cetb.brb_f
        self.temperature_c, self.temperature_f = cetb.temperature_c.detach(), cetb.temperature_f.detach()
        self.qk_c, self.qk_f = _linear_parts(cetb.qkv_c, slice(0, 2 * n)), _linear_parts(cetb.qkv_f, slice(0, 2 * n))
        value_rows = slice(2 * n, 3 * n)
        self.v_c, self.v_f = _linear_parts(cetb.qkv_c, value_rows), _linear_parts(cetb.qkv_f, value_rows)
        self.proj_c, self.proj_f = _linear_parts(cetb.proj_c), _linear_parts(cetb.proj_f)

    def forward(self, c, f):
        c_norm, f_norm = self.norm_c(c), self.norm_f(f)  # eq. 13
        q_c, k_c = _split_qk(c_norm, *self.qk_c, self.n)  # eq. 14
        q_f, k_f = _split_qk(f_norm, *self.qk_f, self.n)
        att_c = channel_attention(q_f, k_c, self.heads, self.temperature_c)  # eq. 15, streams exchange Q
        att_f = channel_attention(q_c, k_f, self.heads, self.temperature_f)
        mixed_c = channel_mix(c_norm, *_fold_attention(self.proj_c, att_c, self.v_c))
        mixed_f = channel_mix(f_norm, *_fold_attention(self.proj_f, att_f, self.v_f))
        return self.brb_c(mixed_c) + c_norm, self.brb_f(mixed_f) + f_norm


class FoldedCFTB(nn.Module):
    """:class:`~model_core.network.CFTB` with ``proj(attention @ value(x)) + x`` as one per-tile channel mix."""

    def __init__(self, cftb):
        super().__init__()
        self.n, self.heads = cftb.proj_c.weight.shape[0], cftb.heads
        self.norm_c, self.norm_f = cftb.norm_c, cftb.norm_f
        self.brb_sum, self.brb_c, self.brb_f = cftb.brb_sum, cftb.brb_c, cftb.brb_f
        self.temperature = cftb.temperature.detach()
        self.qk = _linear_parts(cftb.qk)
        self.value_c, self.value_f = _linear_parts(cftb.value_c), _linear_parts(cftb.value_f)
        self.proj_c, self.proj_f = _linear_parts(cftb.proj_c), _linear_parts(cftb.proj_f)

    def forward(self, c, f):
        c_norm, f_norm = self.norm_c(c), self.norm_f(f)  # eq. 16
        q, k = _split_qk(self.brb_sum(c_norm + f_norm), *self.qk, self.n)
        weights = channel_attention(q, k, self.heads, self.temperature)  # eq. 17
        mixed_c = channel_mix(c_norm, *_fold_attention(self.proj_c, weights, self.value_c, identity=True))
        mixed_f = channel_mix(f_norm, *_fold_attention(self.proj_f, weights, self.value_f, identity=True))
        return self.brb_c(mixed_c), self.brb_f(mixed_f)  # eqs. 18-19


class PointwiseConv(nn.Module):
    """A 1x1 :class:`torch.nn.Conv2d` run as :func:`channel_mix` (same weights)."""

    def __init__(self, conv):
        super().__init__()
        self.matrix, self.bias = _linear_parts(conv)

    def forward(self, x):
        return channel_mix(x, self.matrix, self.bias)


def fold_for_inference(model):
    """A copy of ``model`` with the exact inference-only algebra applied (see the module docstring).

    The copy computes the same function up to float rounding and cannot be trained. GroupNorm's
    affine is *not* folded: in CETB/CFTB the normalised map also feeds a skip connection and the
    query/key path, and in the CCD a GELU follows it, so folding would add work, not remove it.
    """
    from . import network

    folded = copy.deepcopy(model).eval()
    replacements = {
        network.MKCB: FoldedMKCB, network.MKSB: FoldedMKSB, network.CETB: FoldedCETB, network.CFTB: FoldedCFTB,
    }
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            maker = replacements.get(type(child))
            if maker is None and type(child) is nn.Conv2d and child.kernel_size == (1, 1) and _worth_mixing(child):
                maker = PointwiseConv
            if maker is not None:
                setattr(parent, name, maker(child))
    return folded


def _worth_mixing(conv):
    """1x1 convolutions on full-resolution maps (not MKCB's on the pooled 1 x 1 vector)."""
    return conv.groups == 1 and conv.padding in ((0, 0), 0) and conv.bias is not None


# --------------------------------------------------------------------------- the bundled sample


def sample_tiles(size=256, count=None, scale=1e-4, dates=(SAMPLE_T0, SAMPLE_T1)):
    """``(coarse_t1, fine_t0, truth_t1)`` float32 tensors ``(n, 6, size, size)`` of reflectance: the bundled
    sample's pair ``dates`` (T0, T1) cut into non-overlapping ``size`` tiles row by row (``count``; default all)."""
    from .raster import PairReader, RasterReader, Window

    t0, t1 = dates
    fine, coarse, truth = [], [], []
    with PairReader(SAMPLE_DIR / f"fine_{t0}.tif", SAMPLE_DIR / f"coarse_{t1}.tif", scale=scale) as pair, \
            RasterReader(SAMPLE_DIR / f"fine_{t1}.tif") as reference:
        for row in range(0, pair.height - size + 1, size):
            for col in range(0, pair.width - size + 1, size):
                window = Window(col, row, size, size)
                f, c, _valid = pair.read(window)
                fine.append(f)
                coarse.append(c)
                truth.append(reference.read_reflectance(window, scale)[0])
    n = len(fine) if count is None else min(count, len(fine))
    return tuple(torch.from_numpy(np.stack(arrays[:n])) for arrays in (coarse, fine, truth))


# --------------------------------------------------------------------------- preparing a path


class PreparedModel:
    """``(coarse_t1, fine_t0) -> fine_t1`` through one inference path; tensors ``(B, C, H, W)``.

    ``path`` is the path that actually runs (a compiled path that failed says ``exact``/``bf16``),
    ``layout`` the memory layout of the inputs, ``setup_seconds`` what preparing it cost.
    """

    def __init__(self, forward, path, layout="channels_last", autocast_dtype=None, setup_seconds=0.0,
                 tile_by_tile=False):
        self.forward, self.path, self.layout = forward, path, layout
        self.autocast_dtype, self.setup_seconds, self.tile_by_tile = autocast_dtype, setup_seconds, tile_by_tile

    def _one(self, coarse, fine):
        fmt = torch.channels_last if self.layout == "channels_last" else torch.contiguous_format
        coarse, fine = coarse.contiguous(memory_format=fmt), fine.contiguous(memory_format=fmt)
        with torch.inference_mode(), torch.autocast("cpu", self.autocast_dtype or torch.bfloat16,
                                                     enabled=self.autocast_dtype is not None):
            return self.forward(coarse, fine).float()

    def __call__(self, coarse, fine):
        if not self.tile_by_tile or len(coarse) == 1:
            return self._one(coarse, fine)
        # compiled graphs are specialised on batch 1: other sizes would recompile
        return torch.cat([self._one(coarse[i:i + 1], fine[i:i + 1]) for i in range(len(coarse))])


def _layout_model(model, layout):
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return model.to(memory_format=fmt)


def prepare(model, path, layout="channels_last", example=None):
    """A :class:`PreparedModel` for a concrete ``path`` (not ``auto``) on the CPU.

    ``example``: ``(coarse, fine)`` tiles of the job's size, needed by the compiled paths (they
    compile on it, and ``int8`` calibrates with the sample's other date pair at that size).
    Raises :class:`PathUnavailable` when the machine cannot run ``path`` or compiling fails.
    """
    check_path(path)
    if path == "auto":
        raise ValueError("prepare() takes a concrete path; resolve 'auto' with choose_path() first")
    started = time.perf_counter()
    model = model.eval()
    if path == "eager":
        return PreparedModel(model, "eager", "channels_last")
    bf16 = path in ("bf16", "compile-bf16")
    if bf16 and not has_native_bf16():
        raise PathUnavailable("This CPU has no native bfloat16 (avx512_bf16 or amx_bf16); bf16 would be emulated.")
    dtype = torch.bfloat16 if bf16 else None
    if path == "int8":
        forward = _quantized_int8(model, example)
        return PreparedModel(forward, "int8", "channels_last", None, time.perf_counter() - started, tile_by_tile=True)
    folded = _layout_model(fold_for_inference(model), layout)
    if path in ("exact", "bf16"):
        return PreparedModel(folded, path, layout, dtype, time.perf_counter() - started)
    prepared = PreparedModel(_compiled(folded), path, layout, dtype, tile_by_tile=True)
    _warm_up(prepared, example)
    prepared.setup_seconds = time.perf_counter() - started
    return prepared


def _compiled(module):
    if not has_cxx_compiler():
        raise PathUnavailable("torch.compile needs a C++ compiler (g++, clang++ or MSVC) and none was found.")
    return torch.compile(module, dynamic=False)


def _warm_up(prepared, example):
    """Compile now (torch.compile is lazy), with frozen weights; any failure is :class:`PathUnavailable`."""
    import torch._inductor.config as inductor_config

    if example is None:
        raise ValueError("compiled paths need an example (coarse, fine) tile to compile on")
    try:
        with inductor_config.patch(freezing=True):
            prepared(example[0][:1], example[1][:1])
    except Exception as exc:  # noqa: BLE001 (compilers fail in many ways; the caller falls back)
        raise PathUnavailable(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc


def _quantized_int8(model, example):
    """Int8 convolutions by PT2E post-training quantization, calibrated on the sample's other date pair."""
    if not (has_cxx_compiler() and has_int8_quantizer()):
        raise PathUnavailable("int8 needs torchao (PT2E quantization) and a C++ compiler.")
    if example is None:
        raise ValueError("the int8 path needs an example (coarse, fine) tile to export and calibrate on")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    coarse, fine = (x[:1].contiguous(memory_format=torch.channels_last) for x in example)
    size = coarse.shape[-1]
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (coarse, fine)).module()
            quantizer = x86.X86InductorQuantizer()
            quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
            observed = prepare_pt2e(exported, quantizer)
            cal_coarse, cal_fine, _ = sample_tiles(min(size, 256), dates=(CALIBRATION_T0, CALIBRATION_T1))
            for i in range(len(cal_coarse)):
                observed(*(_fit(x[i:i + 1], coarse.shape) for x in (cal_coarse, cal_fine)))
            quantized = convert_pt2e(observed)
    except Exception as exc:  # noqa: BLE001
        raise PathUnavailable(f"int8 quantization failed ({type(exc).__name__}: {exc})") from exc
    prepared = PreparedModel(_compiled(quantized), "int8", "channels_last", tile_by_tile=True)
    _warm_up(prepared, example)
    return prepared.forward


def _fit(x, shape):
    """``x`` cropped or tiled (reflected) to ``shape``'s height and width, channels-last."""
    h, w = shape[-2:]
    while x.shape[-2] < h or x.shape[-1] < w:
        x = torch.cat([x, x.flip(-2)], dim=-2) if x.shape[-2] < h else torch.cat([x, x.flip(-1)], dim=-1)
    return x[..., :h, :w].contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- the per-CPU choice, cached


def cache_dir():
    """Where per-machine measurements live: ``$CTSTFM_CACHE_DIR``, else the user's cache folder."""
    if os.environ.get("CTSTFM_CACHE_DIR"):
        return Path(os.environ["CTSTFM_CACHE_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ctstfm_qgis"


def model_fingerprint(model):
    """A short hash of a network's configuration and weights (accuracy is measured per model)."""
    digest = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_file(model):
    """The JSON file holding this CPU model's, torch version's and network's measurements."""
    key = f"{CACHE_VERSION}|{cpu_model()}|{torch.__version__}|{model_fingerprint(model)}"
    return cache_dir() / f"inference-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def read_cache(path):
    """The cached measurements, or ``{}`` when the file is missing, unreadable or not ours."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("paths"), dict):
        return {}
    if data.get("layout") not in LAYOUTS + (None,):
        return {}
    return data


def write_cache(path, data):
    """Write the measurements atomically; a cache that cannot be written is only not cached."""
    from .outputs import atomic_write_text

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(dict(data, version=CACHE_VERSION), indent=1, sort_keys=True))
    except (OSError, CtstfmError):
        pass


def interleaved_times(calls, rounds):
    """``{name: [seconds per round]}`` of ``calls`` (``{name: fn(round)}``) run in turns, round by round.

    Turns share the machine's ups and downs (other jobs, turbo), so a busy moment does not decide
    between two candidates; use the minimum or median of each list."""
    times = {name: [] for name in calls}
    for index in range(rounds):
        for name, fn in calls.items():
            started = time.perf_counter()
            fn(index)
            times[name].append(time.perf_counter() - started)
    return times


def measure_layouts(model, size=128, rounds=4):
    """``{layout: ms}`` of the ``exact`` path on one ``size`` tile in each memory layout (best of the
    rounds after a warm-up, taken in turns)."""
    coarse, fine, _ = sample_tiles(size, count=1)
    prepared = {layout: prepare(model, "exact", layout) for layout in LAYOUTS}
    times = interleaved_times({k: (lambda _i, p=p: p(coarse, fine)) for k, p in prepared.items()}, rounds + 1)
    return {layout: 1e3 * min(t[1:]) for layout, t in times.items()}


def sample_mae(output, truth):
    """MAE in reflectance of a prediction (negatives clipped, as fusion writes them) against the truth."""
    return float((output.clamp(min=0) - truth).abs().mean())


def measure_paths(model, paths, layout="channels_last", tiles=None, progress=None):
    """``{path: measurement}`` for ``paths`` (``eager`` always included, as the reference) on the sample.

    All paths are prepared first, then predict the sample's tiles in turns (tile 1 by every path,
    then tile 2, ...; the first round warms up). Each entry has ``ms`` (the best of the later
    rounds, per tile of ``tile`` x ``tile`` px), ``setup_s``, ``mae`` (against the true image),
    ``max_abs`` (against eager's output), ``mae_change`` (relative to eager) and ``passed``
    (``mae_change`` under :data:`MAE_GATE`); a path the machine cannot run has ``error`` instead.
    """
    coarse, fine, truth = tiles if tiles is not None else sample_tiles(256)
    prepared, results = {"eager": prepare(model, "eager")}, {}
    for path in paths:
        if path in prepared or path == "auto":
            continue
        if progress is not None:
            progress.info(f"Measuring the '{path}' inference path on this CPU (once; cached).")
        try:
            prepared[path] = prepare(model, path, layout, (coarse[:1], fine[:1]))
        except PathUnavailable as exc:
            results[path] = {"error": str(exc), "passed": False}
    outputs = {path: [] for path in prepared}
    calls = {path: (lambda i, p=path: outputs[p].append(prepared[p](coarse[i:i + 1], fine[i:i + 1])))
             for path in prepared}
    times = interleaved_times(calls, len(coarse))
    reference = torch.cat(outputs["eager"]).clamp(min=0)
    eager_mae = sample_mae(reference, truth)
    for path, p in prepared.items():
        output = torch.cat(outputs[path]).clamp(min=0)
        mae = sample_mae(output, truth)
        change = (mae - eager_mae) / max(eager_mae, 1e-12)
        results[path] = {
            "ms": 1e3 * min(times[path][1:] or times[path]), "tile": int(coarse.shape[-1]),
            "setup_s": p.setup_seconds, "layout": p.layout, "mae": mae, "mae_change": change,
            "max_abs": float((output - reference).abs().max()), "passed": abs(change) < MAE_GATE,
        }
    return results


MIN_TILES_TO_MEASURE = 16  # measuring costs about a dozen tiles' time: only worth it for larger jobs
SAMPLE_BANDS = 6


def _job_seconds(entry, n_tiles, tile_pixels):
    return entry.get("setup_s", 0.0) + n_tiles * entry["ms"] / 1e3 * tile_pixels / entry.get("tile", 256) ** 2


def choose_path(model, n_tiles, tile_pixels=256 * 256, progress=None, measure=True, sample_size=256):
    """``(path, layout)`` that ``auto`` runs for a job of ``n_tiles`` tiles of ``tile_pixels`` pixels.

    From the cached measurements of this CPU, torch version and model (measured now, once, when
    missing, ``measure`` is true, the job has at least :data:`MIN_TILES_TO_MEASURE` tiles and the
    model takes the sample's 6 bands): the passing path with the least ``setup + tiles x time``;
    compiled paths only for jobs of :data:`MIN_TILES_TO_COMPILE` tiles or more. Without
    measurements it is ``exact``, which needs no accuracy check (it changes only float rounding).
    ``sample_size``: the size of the four sample tiles measured (its 512 x 512 pixels hold four of 256).
    """
    file = cache_file(model)
    data = read_cache(file)
    paths = dict(data.get("paths", {}))
    wanted = [p for p in available_paths() if p not in COMPILED_PATHS or n_tiles >= MIN_TILES_TO_COMPILE]
    missing = [p for p in wanted if p not in paths]
    layout = data.get("layout")
    can_measure = measure and n_tiles >= MIN_TILES_TO_MEASURE and model.config.bands == SAMPLE_BANDS
    if can_measure and (missing or layout is None):
        if layout is None:
            data["layout_ms"] = measure_layouts(model, min(sample_size, 128))
            layout = min(data["layout_ms"], key=data["layout_ms"].get)
        tiles = sample_tiles(sample_size, count=4)
        paths.update(measure_paths(model, missing, layout, tiles=tiles, progress=progress))
        write_cache(file, dict(data, layout=layout, paths=paths, cpu=cpu_model(), torch=torch.__version__))
    layout = layout or "channels_last"
    passing = [p for p in wanted if paths.get(p, {}).get("passed") and "ms" in paths[p]]
    if not passing:
        return "exact", layout
    return min(passing, key=lambda p: _job_seconds(paths[p], n_tiles, tile_pixels)), layout


def prepare_for_job(model, path=DEFAULT_PATH, n_tiles=1, tile_shape=(256, 256), progress=None):
    """The :class:`PreparedModel` a CPU job of ``n_tiles`` tiles of ``tile_shape`` runs for ``path``.

    ``auto`` resolves with :func:`choose_path`. A path that turns out unavailable (compiler
    missing or failing, no native bf16, no torchao) falls back to ``bf16`` or ``exact`` eager, and
    says so through ``progress.info``.
    """
    check_path(path)
    layout = "channels_last"
    if path == "auto":
        path, layout = choose_path(model, n_tiles, tile_shape[0] * tile_shape[1], progress)
    bands = model.config.bands
    example = (torch.rand(1, bands, *tile_shape), torch.rand(1, bands, *tile_shape))
    while True:
        try:
            return prepare(model, path, layout, example)
        except PathUnavailable as exc:
            fallback = "bf16" if path == "compile-bf16" and has_native_bf16() else "exact"
            if progress is not None:
                progress.info(f"Inference path '{path}' is not available here ({exc}); using '{fallback}'.")
            path = fallback


# --------------------------------------------------------------------------- threads


def physical_cores():
    """Physical cores this process may run on (hyper-threads counted once); ``os.cpu_count()`` if unknown."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    cores, processor = set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                processor, physical = int(value), "0"
            elif key == "physical id":
                physical = value
            elif key == "core id" and (allowed is None or processor in allowed):
                cores.add((physical, value))
    except (OSError, ValueError):
        cores = set()
    return len(cores) or (len(allowed) if allowed else os.cpu_count() or 1)


def default_threads(desktop=False):
    """Torch threads for a job: one per physical core, less one left to the QGIS window on the desktop."""
    return max(1, physical_cores() - (1 if desktop else 0))


def check_threads(threads):
    """Raise :class:`CtstfmError` unless ``threads`` is ``None``/0 (automatic) or a positive integer."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise CtstfmError(
            f"The number of threads must be a positive whole number, or 0 for automatic (got {threads!r})."
        )


@contextlib.contextmanager
def job_threads(threads=None):
    """Run a job with ``threads`` torch threads (``None``/0: :func:`default_threads`) and give GDAL's
    readers and warper the logical CPUs torch leaves free (at least one), so the tile read ahead
    does not compete with the network for cores; both settings are restored afterwards."""
    from osgeo import gdal

    check_threads(threads)
    threads = threads or default_threads()
    saved = torch.get_num_threads(), gdal.GetConfigOption("GDAL_NUM_THREADS")
    torch.set_num_threads(threads)
    gdal.SetConfigOption("GDAL_NUM_THREADS", str(max(1, (os.cpu_count() or 1) - threads)))
    try:
        yield threads
    finally:
        torch.set_num_threads(saved[0])
        gdal.SetConfigOption("GDAL_NUM_THREADS", saved[1])
