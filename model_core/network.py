"""The CTSTFM network (Jiang & Shao, IEEE JSTARS 2024), block by block as the paper draws it.

``CTSTFM(coarse_t1, fine_t0) -> fine_t1``: tensors ``(B, C, H, W)`` in reflectance, any
``H, W`` (odd sizes too). Nothing is ever down-sampled: every block keeps ``N x H x W``
(convolutions use 'same' padding; the attentions work across channels or pool globally),
so there are no padding tricks and no size constraints.

Structure (Section II, Fig. 1)::

    coarse_t1 -> MKCE (1x1 conv eq. 1, E x BEB eq. 3-4) --+
                                                          +-> CFM (M x BFB, eq. 5-6) -> concat -> CCD -> fine_t1
    fine_t0   -> MKCE (1x1 conv eq. 2, E x BEB eq. 3-4) --+

Each class below reads like its equation; where the paper leaves a choice open, the
docstring says what was chosen and why (the same choices are tabulated in
``docs/architecture.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CtstfmError

DEFAULT_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")

#: What stands in for the coarse image at T0 in a two-image first guess (``CTSTFMConfig.reference``):
#: ``box``: the fine image averaged over ``residual_blur`` pixels, computed by the network;
#: ``footprint``: the fine image aggregated onto the coarse raster's own grid and resampled back
#: like the coarse image (:func:`model_core.raster.footprint_reader`), handed in as ``coarse_t0``.
REFERENCES = ("box", "footprint")
#: The box (fine pixels) that stands for the coarse image at T0 where a network has no ``residual_blur`` of
#: its own: about two 480 m coarse pixels at 30 m (the coarse footprint plus the resampling onto the fine grid).
STAND_IN_BOX = 33
#: The per-band first-guess gains of :class:`CTSTFMConfig`, fitted by training (``fit_change_gain``).
GAIN_FIELDS = ("change_gain", "box_change_gain")


#: The allowed range of each integer network setting. A model file is user input: its
#: configuration is checked against these before anything is built, so a damaged or hostile
#: file cannot make the network allocate terabytes. The ranges hold the paper's network
#: (width 20, 3 + 3 blocks, kernels 3/5/7) with wide margins.
CONFIG_LIMITS = {
    "bands": (1, 64),
    "width": (1, 256),
    "encoder_blocks": (0, 16),
    "fusion_blocks": (0, 16),
    "heads": (1, 64),
    "norm_groups": (1, 256),
    "residual_blur": (0, 255),
    "change_blur": (0, 63),
}
MAX_KERNELS = 5  # kernel sizes per multi-kernel block
MAX_KERNEL = 31
#: At most this many parameters (about 200 MB of float32 weights; the paper's network has 0.7 M).
MAX_PARAMETERS = 50_000_000


class ConfigError(CtstfmError, ValueError):
    """A network configuration that cannot be built; the message says which field and why."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CTSTFMConfig:
    """Every choice that shapes the network; stored in model files (``to_dict``/``from_dict``).

    ``width`` is N, the feature channels of every block. N = 20 with the readings documented
    here gives 670,926 parameters for 6 bands, 4.3 % below the paper's 0.701 M (Table II).
    ``heads`` splits the channel attention of CETB/CFTB; ``norm_groups`` is the GroupNorm group
    count (CETB, CFTB, CCD). The ``use_*`` switches are for ablations: a block switched off is
    the identity and has no parameters. ``predict_residual=True`` makes the output
    ``fine_t0 + CCD(...)`` (a documented deviation, for models trained that way); the default
    ``False`` is the network as drawn. ``residual_blur=k > 0`` (with ``predict_residual``) makes
    the first guess ``fine_t0 + coarse_t1 - box_k(fine_t0)``: the fine image moved by the coarse
    change, with the fine image blurred to the coarse scale standing in for the coarse image at
    T0 that CTSTFM does not get (see :func:`coarse_change_first_guess`). ``reference="footprint"``
    replaces that box by the fine image degraded through the coarse sensor's own footprint (its
    pixels' area mean, then a Gaussian PSF of ``footprint_psf`` coarse pixels), which the raster
    reader computes and hands in as ``coarse_t0`` (the box stays the fallback where the footprint
    is unknown). ``images=3`` is the three-image mode: the coarse image at T0 is given
    (``coarse_t0``), the first guess is ``fine_t0 + coarse_t1 - coarse_t0`` and the coarse stream
    gets the coarse change ``coarse_t1 - coarse_t0`` instead of ``coarse_t1`` (a documented deviation,
    chosen by measurement over ``coarse_t0`` as extra channels; ``docs/architecture.md``).
    ``change_gain`` (one per band, fitted by training on the training dates) scales the coarse change
    in the first guess, ``fine_t0 + gain * (coarse_t1 - reference)``: real coarse changes hold
    misregistration and noise, so the fine change is smaller than the coarse one (a slope below 1).
    ``box_change_gain`` (three-image mode, one per band, fitted with ``change_gain``) adds the coarse
    change measured against the fine image itself: ``fine_t0 + gain * (coarse_t1 - coarse_t0) +
    box_gain * (coarse_t1 - box_k(fine_t0))``. The two changes err differently (``C1 - C0`` carries
    both dates' misregistration, ``C1 - box_k(F0)`` the sensors' difference), so a fitted mix of the
    two beats either alone (docs/architecture.md, *Change gain*). ``change_blur=m > 1`` (fitted with the
    gains) averages each coarse change over ``m x m`` fine pixels before it is added: a coarse image
    delivered on the fine grid by nearest neighbour is blocky, and its change would print the block
    edges onto the fine image (docs/architecture.md, *Change blur*).
    """

    bands: int = 6
    width: int = 20
    encoder_blocks: int = 3
    fusion_blocks: int = 3
    heads: int = 1
    norm_groups: int = 4
    kernel_sizes: tuple = (3, 5, 7)
    use_mkcb: bool = True
    use_mksb: bool = True
    use_cetb: bool = True
    use_cftb: bool = True
    predict_residual: bool = False
    residual_blur: int = 0
    reference: str = "box"
    footprint_psf: float = 0.5
    images: int = 2
    change_gain: tuple = ()  # per band: first guess F0 + gain * (C1 - reference); empty: 1 for every band
    box_change_gain: tuple = ()  # per band, three-image mode: + box_gain * (C1 - box_k(F0)); empty: none
    change_blur: int = 0  # the first guess's coarse changes averaged over m x m fine pixels; 0 or 1: as they are

    @property
    def takes_coarse_t0(self):
        """Whether the network reads a ``coarse_t0`` input: the coarse image at T0 (three-image mode) or
        the fine image seen through the coarse footprint. A two-image box model ignores one."""
        return self.images == 3 or self.reference == "footprint"

    @property
    def fine_tuned(self):
        """Whether training fitted this model's first guess on its training dates (``change_gain``): what
        ``ctstfm:train``'s fine-tuning makes, as opposed to the plugin's model or a network without a first guess."""
        return bool(self.change_gain)

    def __post_init__(self):
        if isinstance(self.kernel_sizes, list):
            object.__setattr__(self, "kernel_sizes", tuple(self.kernel_sizes))
        for name in GAIN_FIELDS:
            gains = getattr(self, name)
            if isinstance(gains, (list, tuple)) and all(
                isinstance(g, (int, float)) and not isinstance(g, bool) for g in gains
            ):
                object.__setattr__(self, name, tuple(float(g) for g in gains))
        for name, (low, high) in CONFIG_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(
                    f"Network setting {name}={value!r} is out of range; it must be a whole number from {low} to "
                    f"{high}."
                )
        for name in ("use_mkcb", "use_mksb", "use_cetb", "use_cftb", "predict_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"Network setting {name}={getattr(self, name)!r} is invalid; use true or false.")
        if self.residual_blur and not self.predict_residual:
            raise ConfigError("residual_blur only applies with predict_residual=true; set both or neither.")
        if self.reference not in REFERENCES:
            raise ConfigError(f"Network setting reference={self.reference!r} is invalid; use one of {', '.join(REFERENCES)}.")
        if self.reference == "footprint" and not (self.predict_residual and self.residual_blur):
            raise ConfigError(
                "reference='footprint' needs predict_residual=true and a residual_blur (the box used where the "
                "coarse image's footprint is unknown); set both."
            )
        if isinstance(self.footprint_psf, bool) or not isinstance(self.footprint_psf, (int, float)) or not (
            0 <= self.footprint_psf <= 3
        ):
            raise ConfigError(
                f"Network setting footprint_psf={self.footprint_psf!r} is invalid; use a PSF width between 0 and 3 "
                "coarse pixels."
            )
        if self.images not in (2, 3) or isinstance(self.images, bool):
            raise ConfigError(f"Network setting images={self.images!r} is invalid; use 2 (fine T0, coarse T1) or 3 (plus coarse T0).")
        for name in GAIN_FIELDS:
            gains = getattr(self, name)
            if not isinstance(gains, tuple) or len(gains) not in (0, self.bands) or any(
                not isinstance(g, float) or not 0.0 <= g <= 2.0 for g in gains
            ):
                raise ConfigError(
                    f"Network setting {name}={gains!r} is invalid; give one gain between 0 and 2 per band "
                    f"({self.bands}), or none."
                )
            if gains and not self.predict_residual:
                raise ConfigError(
                    f"{name} only applies with predict_residual=true (it scales the first guess's change)."
                )
        if self.change_blur > 1 and not self.predict_residual:
            raise ConfigError("change_blur only applies with predict_residual=true (it smooths the first guess's change).")
        if self.box_change_gain and self.images != 3:
            raise ConfigError("box_change_gain only applies with images=3 (it mixes C1 - box(F0) into C1 - C0).")
        ks = self.kernel_sizes
        if (
            not isinstance(ks, tuple)
            or not 1 <= len(ks) <= MAX_KERNELS
            or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_KERNEL or k % 2 == 0 for k in ks)
        ):
            raise ConfigError(
                f"Network setting kernel_sizes={ks!r} is out of range; it must be 1 to {MAX_KERNELS} odd kernel sizes "
                f"from 1 to {MAX_KERNEL}, e.g. [3, 5, 7]."
            )
        if self.width % self.heads:
            raise ConfigError(f"width={self.width} is not a multiple of heads={self.heads}; choose a width that is.")
        if self.width % self.norm_groups:
            raise ConfigError(
                f"width={self.width} is not a multiple of norm_groups={self.norm_groups}; choose a width that is."
            )

    def parameter_count(self) -> int:
        """The network's parameter count, from a copy built on PyTorch's 'meta' device (no memory used)."""
        with torch.device("meta"):
            return count_parameters(CTSTFM(self))

    def check_size(self) -> "CTSTFMConfig":
        """Raise :class:`ConfigError` when the network would have more than :data:`MAX_PARAMETERS`
        parameters (each setting in range can still multiply into too many); returns ``self``.
        Checked for model files and new networks, before the real network is built."""
        parameters = self.parameter_count()
        if parameters > MAX_PARAMETERS:
            raise ConfigError(
                f"This network configuration (width {self.width}, {self.encoder_blocks} encoder and "
                f"{self.fusion_blocks} fusion blocks, kernels {list(self.kernel_sizes)}) has {parameters:,} parameters, "
                f"more than the {MAX_PARAMETERS:,} allowed (the paper's network has about 0.7 million); use a smaller "
                "width or fewer blocks."
            )
        return self

    def to_dict(self) -> dict:
        """Plain data (ints, bools, a list) for model files and JSON."""
        data = dataclasses.asdict(self)
        data["kernel_sizes"] = list(self.kernel_sizes)
        for name in GAIN_FIELDS:
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_dict(cls, data) -> "CTSTFMConfig":
        """Build from ``to_dict()`` output; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"A network configuration must be a mapping, not {type(data).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"Unknown network setting(s) {', '.join(unknown)}; the model was probably written by a newer "
                f"model_core, so update the plugin (known settings: {', '.join(sorted(known))})."
            )
        return cls(**data).check_size()


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (all are trainable)."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- helpers


def conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    """A 2-D convolution with 'same' zero padding (odd kernels), so H and W never change."""
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)


def attention_weights(q: torch.Tensor, k: torch.Tensor, heads: int, temperature: torch.Tensor) -> torch.Tensor:
    """``Softmax(Q K^T / t)`` across channels ("transposed" attention), shape ``(B, heads, d, d)``.

    Q and K are ``(B, N, H, W)``; each channel map is flattened over the H*W pixels and
    L2-normalised, so ``Q K^T`` holds cosine similarities between channel maps, whatever the
    tile size. The learnable per-head ``temperature`` replaces the paper's ``1/sqrt(d)``
    (eq. 15): with positions as the contracted axis, ``sqrt(d)`` would be ``sqrt(H*W)`` and
    change with the tile size. Cost and memory are linear in the pixel count.
    """
    b, n = q.shape[:2]
    q = F.normalize(q.reshape(b, heads, n // heads, -1), dim=-1)
    k = F.normalize(k.reshape(b, heads, n // heads, -1), dim=-1)
    return torch.softmax((q @ k.transpose(-2, -1)) * temperature, dim=-1)


def apply_attention(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``weights * V``: each output channel is a convex mix of value channels of its head."""
    b, n, h, w = v.shape
    heads = weights.shape[1]
    return (weights @ v.reshape(b, heads, n // heads, h * w)).reshape(b, n, h, w)


def multi_kernel_weight(convs: nn.ModuleList):
    """The single kernel and bias equal to summing the outputs of ``convs`` (eq. 11).

    A sum of 'same'-padded convolutions with kernels 3, 5, 7 is one 7x7 convolution whose
    kernel is the three kernels zero-padded to 7x7 and added; computing it that way costs 49
    instead of 9 + 25 + 49 = 83 multiply-adds per channel pair and gives the same result
    (up to float rounding). The three kernels stay separate parameters, as drawn.
    """
    size = max(c.kernel_size[0] for c in convs)
    weight = 0
    bias = 0
    for c in convs:
        pad = (size - c.kernel_size[0]) // 2
        weight = weight + F.pad(c.weight, (pad, pad, pad, pad))
        bias = bias + c.bias
    return weight, bias


# --------------------------------------------------------------------------- blocks


class BRB(nn.Module):
    """Basic residual block, Fig. 2(a): ``x + Conv3x3(GELU(Conv3x3(x)))``, N -> N.

    The paper draws two convolutions, an activation and a skip without kernel sizes; 3x3
    kernels and GELU (the activation used everywhere else in the paper) are our reading.
    """

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = conv(width, width, 3)
        self.act = nn.GELU()
        self.conv2 = conv(width, width, 3)

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x)))


class MKCB(nn.Module):
    """Multi kernel channel attention block, Fig. 2(c), eqs. 7-10.

    * eq. 7: ``F_concated = Concat(Conv3x3(F), Conv5x5(F), Conv7x7(F))``, each N -> N, so 3N channels.
    * eq. 8: ``F_pool = AvgPool(F_concated) + MaxPool(F_concated)``, global over H x W: one
      value per channel ("the importance coefficient of each feature layer").
    * eq. 9: ``F_weight = Sigmoid(Conv1x1(GELU(Conv3x3(F_pool))))``. The 3x3 convolution maps
      3N -> N (this is where the three scales are merged into one weight per channel of F),
      the 1x1 convolution N -> N. On the 1x1 pooled map a zero-padded 3x3 convolution only
      ever touches its centre tap; the other eight taps multiply padding and would never get
      a gradient, so only the centre tap is stored (a 1x1 convolution, ``conv3x3_centre``) —
      the same function without 8/9 dead weights.
    * eq. 10: ``F_MKCB = F_weight x F`` (N weights, broadcast over pixels).

    Pooling each branch separately and concatenating the pooled vectors equals pooling the
    concatenation, without materialising a 3N x H x W tensor.
    """

    def __init__(self, width: int, kernel_sizes=(3, 5, 7)):
        super().__init__()
        self.convs = nn.ModuleList(conv(width, width, k) for k in kernel_sizes)
        self.conv3x3_centre = nn.Conv2d(width * len(kernel_sizes), width, 1)
        self.act = nn.GELU()
        self.conv1x1 = nn.Conv2d(width, width, 1)

    def forward(self, f):
        pooled = []
        for c in self.convs:  # eq. 7 (concatenation after pooling) and eq. 8
            y = c(f)
            pooled.append(y.mean(dim=(2, 3), keepdim=True) + y.amax(dim=(2, 3), keepdim=True))
        f_pool = torch.cat(pooled, dim=1)
        f_weight = torch.sigmoid(self.conv1x1(self.act(self.conv3x3_centre(f_pool))))  # eq. 9
        return f_weight * f  # eq. 10


class MKSB(nn.Module):
    """Multi kernel spatial attention block, Fig. 2(d), eqs. 11-12.

    * eq. 11: ``F_sumed = Conv3x3(F) + Conv5x5(F) + Conv7x7(F)``, each N -> N (computed as one
      7x7 convolution with the summed kernels, see :func:`multi_kernel_weight`).
    * eq. 12: ``F_MKSB = Softmax(BRB(F_sumed)) x F``.

    Softmax axis: over the H*W positions of each channel separately — the paper says Softmax
    "evaluates the importance of each pixel", i.e. pixels compete with each other, and a
    per-channel map keeps the block's output N x H x W as eq. 12's elementwise product needs.
    Scale: a softmax over H*W positions averages 1/(H*W) (1.5e-5 on a 256 x 256 tile), which
    would shrink F to nothing after three BEBs; it is multiplied by H*W so that the weights
    average exactly 1 at any tile size: ``w_p = exp(s_p) / mean_q exp(s_q)``. The weights
    depend on the whole tile (as GroupNorm does), so train and infer on the same tile size.
    """

    def __init__(self, width: int, kernel_sizes=(3, 5, 7)):
        super().__init__()
        self.convs = nn.ModuleList(conv(width, width, k) for k in kernel_sizes)
        self.brb = BRB(width)

    def forward(self, f):
        weight, bias = multi_kernel_weight(self.convs)
        f_sumed = F.conv2d(f, weight, bias, padding=weight.shape[-1] // 2)  # eq. 11
        s = self.brb(f_sumed)
        b, n, h, w = s.shape
        weights = torch.softmax(s.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w) * (h * w)
        return weights * f  # eq. 12


class BEB(nn.Module):
    """Basic encoder block, eq. 4: ``F_e = MKSB(MKCB(BRB(F_{e-1}))) + F_{e-1}``."""

    def __init__(self, cfg: CTSTFMConfig):
        super().__init__()
        self.brb = BRB(cfg.width)
        self.mkcb = MKCB(cfg.width, cfg.kernel_sizes) if cfg.use_mkcb else nn.Identity()
        self.mksb = MKSB(cfg.width, cfg.kernel_sizes) if cfg.use_mksb else nn.Identity()

    def forward(self, x):
        return self.mksb(self.mkcb(self.brb(x))) + x


class MKCE(nn.Module):
    """Multi kernel CNN encoder: eq. 1/2 (1x1 conv, C -> N "shallow features"), then E BEBs (eq. 3)."""

    def __init__(self, cfg: CTSTFMConfig):
        super().__init__()
        self.stem = nn.Conv2d(cfg.bands, cfg.width, 1)
        self.blocks = nn.Sequential(*(BEB(cfg) for _ in range(cfg.encoder_blocks)))

    def forward(self, image):
        return self.blocks(self.stem(image))


class CETB(nn.Module):
    """Cross exchange Transformer block, Fig. 2(e), eqs. 13-15, on the coarse (c) and fine (f) streams.

    * eq. 13: ``F_i,norm = GN(F_i)`` (one GroupNorm per stream).
    * eq. 14: ``Q_i, K_i, V_i`` by 1x1 convolutions of ``F_i,norm`` (one N -> 3N convolution per
      stream, identical to three N -> N convolutions stacked).
    * eq. 15: ``F_i,CETB = BRB(Conv1x1(Softmax(Q K^T / t) * V_i)) + F_i,norm``.

    Exchange: the text says the streams "exchange each other's Q-vectors", so stream i uses
    ``Q_j`` with its own ``K_i, V_i`` (eq. 15's subscripts read ``Q_i K_j^T``; keeping K and V
    from the same stream means the softmax ranks exactly the value channels it mixes).
    Attention is across channels (see :func:`attention_weights`).
    """

    def __init__(self, width: int, heads: int = 1, norm_groups: int = 4):
        super().__init__()
        self.heads = heads
        self.norm_c = nn.GroupNorm(norm_groups, width)
        self.norm_f = nn.GroupNorm(norm_groups, width)
        self.qkv_c = nn.Conv2d(width, 3 * width, 1)
        self.qkv_f = nn.Conv2d(width, 3 * width, 1)
        self.temperature_c = nn.Parameter(torch.ones(heads, 1, 1))
        self.temperature_f = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj_c = nn.Conv2d(width, width, 1)
        self.proj_f = nn.Conv2d(width, width, 1)
        self.brb_c = BRB(width)
        self.brb_f = BRB(width)

    def forward(self, c, f):
        c_norm, f_norm = self.norm_c(c), self.norm_f(f)  # eq. 13
        q_c, k_c, v_c = self.qkv_c(c_norm).chunk(3, dim=1)  # eq. 14
        q_f, k_f, v_f = self.qkv_f(f_norm).chunk(3, dim=1)
        att_c = apply_attention(attention_weights(q_f, k_c, self.heads, self.temperature_c), v_c)  # eq. 15
        att_f = apply_attention(attention_weights(q_c, k_f, self.heads, self.temperature_f), v_f)
        return self.brb_c(self.proj_c(att_c)) + c_norm, self.brb_f(self.proj_f(att_f)) + f_norm


class CFTB(nn.Module):
    """Combine fusion Transformer block, Fig. 2(f), eqs. 16-19.

    * eq. 16: ``F_i,norm = GN(F_i)`` (one GroupNorm per stream).
    * eq. 17: ``F_weight = Softmax(Attn(BRB(F_C,norm + F_F,norm)))``: Attn (the grey box: 1x1
      convolution, reshape, transpose, matrix product) makes Q and K from the summed map
      (one N -> 2N 1x1 convolution) and their channel-by-channel product; one weight matrix
      shared by both streams.
    * eq. 18: ``F_i,Atten = Conv1x1(F_i,norm) * F_weight`` (the value of each stream).
    * eq. 19: ``F_i,CFTB = BRB(Conv1x1(F_i,Atten) + F_i,norm)`` — here, as written, the skip is
      inside the BRB (in eq. 15 it is outside).
    """

    def __init__(self, width: int, heads: int = 1, norm_groups: int = 4):
        super().__init__()
        self.heads = heads
        self.norm_c = nn.GroupNorm(norm_groups, width)
        self.norm_f = nn.GroupNorm(norm_groups, width)
        self.brb_sum = BRB(width)
        self.qk = nn.Conv2d(width, 2 * width, 1)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.value_c = nn.Conv2d(width, width, 1)
        self.value_f = nn.Conv2d(width, width, 1)
        self.proj_c = nn.Conv2d(width, width, 1)
        self.proj_f = nn.Conv2d(width, width, 1)
        self.brb_c = BRB(width)
        self.brb_f = BRB(width)

    def forward(self, c, f):
        c_norm, f_norm = self.norm_c(c), self.norm_f(f)  # eq. 16
        q, k = self.qk(self.brb_sum(c_norm + f_norm)).chunk(2, dim=1)
        f_weight = attention_weights(q, k, self.heads, self.temperature)  # eq. 17
        att_c = apply_attention(f_weight, self.value_c(c_norm))  # eq. 18
        att_f = apply_attention(f_weight, self.value_f(f_norm))
        return self.brb_c(self.proj_c(att_c) + c_norm), self.brb_f(self.proj_f(att_f) + f_norm)  # eq. 19


class BFB(nn.Module):
    """Basic fusion block, eq. 6: ``F_m = CFTB(CETB(BRB(F_{m-1}))) + F_{m-1}`` on both streams.

    Each stream has its own BRB and its own skip connection.
    """

    def __init__(self, cfg: CTSTFMConfig):
        super().__init__()
        self.brb_c = BRB(cfg.width)
        self.brb_f = BRB(cfg.width)
        self.cetb = CETB(cfg.width, cfg.heads, cfg.norm_groups) if cfg.use_cetb else None
        self.cftb = CFTB(cfg.width, cfg.heads, cfg.norm_groups) if cfg.use_cftb else None

    def forward(self, c, f):
        c_out, f_out = self.brb_c(c), self.brb_f(f)
        if self.cetb is not None:
            c_out, f_out = self.cetb(c_out, f_out)
        if self.cftb is not None:
            c_out, f_out = self.cftb(c_out, f_out)
        return c_out + c, f_out + f


class CFM(nn.Module):
    """Cross fusion module, eq. 5: M BFBs in sequence on the (coarse, fine) feature pair."""

    def __init__(self, cfg: CTSTFMConfig):
        super().__init__()
        self.blocks = nn.ModuleList(BFB(cfg) for _ in range(cfg.fusion_blocks))

    def forward(self, c, f):
        for block in self.blocks:
            c, f = block(c, f)
        return c, f


class CCD(nn.Module):
    """Convolutional compression decoder (Fig. 1): 1x1 2N -> N, GN, GELU, 3x3 N -> N, GN, GELU, 1x1 N -> C."""

    def __init__(self, cfg: CTSTFMConfig):
        n = cfg.width
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(2 * n, n, 1),
            nn.GroupNorm(cfg.norm_groups, n),
            nn.GELU(),
            conv(n, n, 3),
            nn.GroupNorm(cfg.norm_groups, n),
            nn.GELU(),
            nn.Conv2d(n, cfg.bands, 1),
        )

    def forward(self, x):
        return self.layers(x)


def box_mean(image: torch.Tensor, box: int) -> torch.Tensor:
    """``image`` averaged over a ``box`` x ``box`` window around each pixel; edges replicate.

    Taken along rows, then along columns: the same mean with 2k instead of k^2 additions per
    pixel (a 2-D 33 x 33 pool was 14 % of a forward pass, scripts/profile_network.py)."""
    before, after = box // 2, box - 1 - box // 2
    padded = F.pad(image, (before, after, before, after), mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(padded, (box, 1), stride=1), (1, box), stride=1)


def coarse_change_first_guess(coarse_t1: torch.Tensor, fine_t0: torch.Tensor, box: int) -> torch.Tensor:
    """``fine_t0 + coarse_t1 - box(fine_t0)``: a temporal-difference estimate without coarse T0.

    Temporal difference adds the coarse change ``coarse_t1 - coarse_t0`` to the fine image;
    CTSTFM has no ``coarse_t0``, so the fine image averaged over a ``box`` x ``box`` window
    (about two coarse pixels: the coarse sensor's footprint plus the resampling onto the fine
    grid) stands in for it. Sensor gain and offset differences are left for the network to
    correct. Edges replicate, so any tile size works.
    """
    return fine_t0 + coarse_t1 - box_mean(fine_t0, box)


class CTSTFM(nn.Module):
    """The whole network: ``forward(coarse_t1, fine_t0, coarse_t0=None) -> fine_t1``, all ``(B, C, H, W)`` reflectance.

    Two encoders that share no weights (Section II-A), the CFM on the pair, the two streams
    concatenated (coarse first) into 2N channels and decoded by the CCD. With
    ``config.predict_residual`` the output is a correction added to a first guess
    (:meth:`first_guess`); with ``config.images == 3`` the coarse encoder reads the coarse change
    ``coarse_t1 - coarse_t0``.
    """

    def __init__(self, config: CTSTFMConfig | None = None):
        super().__init__()
        self.config = config if config is not None else CTSTFMConfig()
        self.coarse_encoder = MKCE(self.config)
        self.fine_encoder = MKCE(self.config)
        self.cfm = CFM(self.config)
        self.ccd = CCD(self.config)
        if self.config.predict_residual:
            # Start as the first guess (output = fine_t0, or the coarse-change estimate): the last
            # 1x1 convolution begins at zero, so early training refines a sensible estimate
            # instead of undoing random noise.
            last = self.ccd.layers[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # Channels-last (NHWC) weights make oneDNN's convolutions with few channels about 25 %
        # faster on CPU (scripts/bench_network.py); load_state_dict keeps this layout.
        self.to(memory_format=torch.channels_last)

    def encode_fine(self, fine_t0: torch.Tensor) -> torch.Tensor:
        """The fine stream's encoding (MKCE of F0), ``(B, N, H, W)``: computed once per tile of a
        reference and handed to :meth:`forward` as ``fine_features`` for every target that uses it."""
        return self.fine_encoder(fine_t0)

    def encode_coarse(self, coarse_t1: torch.Tensor) -> torch.Tensor:
        """The coarse stream's encoding (MKCE of C1) of a two-image model, ``(B, N, H, W)``: shared by
        every reference a target is predicted from (``coarse_features`` of :meth:`forward`). A
        three-image model's coarse stream reads ``C1 - C0``, which differs per reference."""
        return self.coarse_encoder(coarse_t1)

    def reference(self, fine_t0: torch.Tensor, coarse_t0: torch.Tensor | None) -> torch.Tensor | None:
        """What stands for the coarse image at T0: ``coarse_t0`` when given to a network that takes one
        (:attr:`CTSTFMConfig.takes_coarse_t0`), else ``box_k(fine_t0)`` with ``k = residual_blur`` (or
        :data:`STAND_IN_BOX` for a three-image network without one), else ``None``."""
        if coarse_t0 is not None and self.config.takes_coarse_t0:
            return coarse_t0
        if self.config.residual_blur:
            return box_mean(fine_t0, self.config.residual_blur)
        if self.config.images == 3:  # its coarse stream reads C1 - C0: the box stands in for C0
            return box_mean(fine_t0, STAND_IN_BOX)
        return None

    def first_guess(self, coarse_t1, fine_t0, reference):
        """``fine_t0 + gain * (coarse_t1 - reference)`` (the coarse change moved onto the fine image;
        ``gain`` is ``config.change_gain`` per band, 1 when empty), plus ``box_gain * (coarse_t1 -
        box_k(fine_t0))`` with a ``config.box_change_gain``; ``fine_t0`` when there is no reference.
        With a ``config.change_blur`` each coarse change is first averaged over that box."""
        if reference is None:
            return fine_t0
        guess = fine_t0 + self._per_band(self.config.change_gain, fine_t0) * self._smoothed(coarse_t1 - reference)
        if self.config.box_change_gain:
            box = box_mean(fine_t0, self.config.residual_blur or STAND_IN_BOX)
            guess = guess + self._per_band(self.config.box_change_gain, fine_t0) * self._smoothed(coarse_t1 - box)
        return guess

    def _smoothed(self, change):
        """``change`` averaged over ``config.change_blur`` pixels (as it is for 0 or 1)."""
        return box_mean(change, self.config.change_blur) if self.config.change_blur > 1 else change

    @staticmethod
    def _per_band(gains, like):
        """``gains`` as a ``(1, C, 1, 1)`` tensor like ``like``; 1 when there are none."""
        if not gains:
            return 1.0
        return torch.tensor(gains, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def _check_inputs(self, coarse_t1, fine_t0, coarse_t0):
        bands = self.config.bands
        shapes = [coarse_t1.shape, fine_t0.shape] + ([coarse_t0.shape] if coarse_t0 is not None else [])
        if coarse_t1.dim() != 4 or coarse_t1.shape[1] != bands or any(shape != coarse_t1.shape for shape in shapes):
            raise CtstfmError(
                f"CTSTFM needs coarse and fine images of the same shape (B, {bands}, H, W); got "
                f"{', '.join(str(tuple(shape)) for shape in shapes)} — resample the coarse images onto the fine "
                f"grid and give them the model's {bands} bands."
            )

    def forward(self, coarse_t1: torch.Tensor, fine_t0: torch.Tensor, coarse_t0: torch.Tensor | None = None, *,
                fine_features: torch.Tensor | None = None, coarse_features: torch.Tensor | None = None):
        """``coarse_t0``: the coarse image at T0 on the fine grid, or its stand-in (the fine image
        degraded through the coarse footprint); ``None`` uses ``box_k(fine_t0)`` where one is needed.
        ``fine_features`` / ``coarse_features``: :meth:`encode_fine` of ``fine_t0`` / :meth:`encode_coarse`
        of ``coarse_t1`` when already computed (the result is the same, the encoder is skipped;
        ``coarse_features`` only for two-image models)."""
        self._check_inputs(coarse_t1, fine_t0, coarse_t0)
        residual = self.config.predict_residual
        reference = self.reference(fine_t0, coarse_t0) if residual or self.config.images == 3 else None
        if coarse_features is None or self.config.images != 2:
            coarse_features = self.coarse_encoder(coarse_t1 if self.config.images == 2 else coarse_t1 - reference)
        if fine_features is None:
            fine_features = self.encode_fine(fine_t0)
        c, f = self.cfm(coarse_features, fine_features)
        out = self.ccd(torch.cat((c, f), dim=1)).contiguous()
        if not residual:
            return out
        return out + self.first_guess(coarse_t1, fine_t0, reference)

    def select_bands(self, indices, fill=None) -> "CTSTFM":
        """This network for the bands ``indices`` (0-based, in the order wanted), without retraining.

        Bands enter and leave the network only through the two stems (1x1 convolutions) and the
        CCD's last 1x1 convolution; the first guess works band by band. Slicing those weights
        gives a network whose output on the chosen bands equals this network's output when the
        other bands' inputs hold ``fill`` (per band of this model, default 0): their constant
        contribution to the stems is folded into the stems' biases (none to a three-image coarse
        stem, which reads ``coarse_t1 - coarse_t0``: 0 where both hold the same fill).
        """
        indices = [int(i) for i in indices]
        bands = self.config.bands
        if not indices or len(set(indices)) != len(indices) or not all(0 <= i < bands for i in indices):
            raise CtstfmError(f"Band indices {indices} do not select distinct bands of a {bands}-band model.")
        missing = [i for i in range(bands) if i not in indices]
        fill = torch.zeros(bands) if fill is None else torch.as_tensor(fill, dtype=torch.float32).reshape(bands)
        gains = {name: tuple(getattr(self.config, name)[i] for i in indices) if getattr(self.config, name) else ()
                 for name in GAIN_FIELDS}
        subset = CTSTFM(dataclasses.replace(self.config, bands=len(indices), **gains))
        state = {key: value.detach().clone() for key, value in self.state_dict().items()}
        for stem in ("coarse_encoder.stem", "fine_encoder.stem"):
            weight = state[f"{stem}.weight"]
            if stem == "fine_encoder.stem" or self.config.images == 2:
                state[f"{stem}.bias"] = state[f"{stem}.bias"] + weight[:, missing, 0, 0] @ fill[missing]
            state[f"{stem}.weight"] = weight[:, indices]
        last = f"ccd.layers.{len(self.ccd.layers) - 1}"
        state[f"{last}.weight"] = state[f"{last}.weight"][indices]
        state[f"{last}.bias"] = state[f"{last}.bias"][indices]
        subset.load_state_dict(state, strict=True)
        return subset.to(next(self.parameters()).device).train(self.training)
