"""The state of a training run, saved after every epoch so an interrupted run resumes.

:class:`TrainingState` holds what the epoch loop updates (epochs done, history,
best weights and metrics); :meth:`TrainingState.save` writes it with the model,
optimizer, gradient scaler and random generators to ``<model>.checkpoint.pt``
(plain tensors and data, read back with ``weights_only=True``), and
:meth:`TrainingState.resume` restores all of them, refusing a checkpoint made
from other data or another network (its ``identity``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CtstfmError
from ..outputs import atomic_torch_save

CHECKPOINT_SUFFIX = ".checkpoint.pt"
CHECKPOINT_FORMAT = "ctstfm-training-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(out_model):
    """Where the checkpoint of the run writing ``out_model`` lives."""
    return Path(str(out_model) + CHECKPOINT_SUFFIX)


#: How much better (a fraction of its MAE) an epoch must validate to become the best: smaller steps are
#: within the noise of the validation windows, and with few dates the later epochs that only fit the
#: training dates a little better are the ones that transfer worst (docs/training.md).
MIN_IMPROVEMENT = 0.01


@dataclass
class TrainingState:
    """What the epoch loop carries from epoch to epoch (and across a resume)."""

    identity: dict  # dates, bands, network config, validation mode: what a resumed run must match
    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # one report row per epoch
    best_state: dict | None = None  # weights of the best epoch, on the CPU
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    initial_metrics: dict | None = None  # the starting model's validation metrics
    seconds_before: float = 0.0  # training time of the runs this one resumes
    baselines: dict = field(default_factory=dict)  # "no_change"/"first_guess" -> metrics on the same windows
    band_means: list = field(default_factory=list)  # mean reflectance per band of the validation windows

    def start(self, metrics, model):
        """Epoch 0: the starting model, validated, is the best so far; training must beat it to replace it."""
        self.initial_metrics = dict(metrics)
        self._keep(0, metrics, model)

    def _keep(self, epoch, metrics, model):
        self.best_state = {key: value.detach().to("cpu").clone() for key, value in model.state_dict().items()}
        self.best_epoch = epoch
        self.best_metrics = dict(metrics)

    def record(self, row, metrics, model):
        """Add one epoch's report row; keep the weights when validation MAE improved by at least
        :data:`MIN_IMPROVEMENT`. Returns whether it did."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        improved = self.best_state is None or metrics["mae"] < self.best_metrics["mae"] * (1.0 - MIN_IMPROVEMENT)
        if improved:
            self._keep(self.epoch, metrics, model)
        return improved

    def save(self, path, *, model, optimizer, scaler, rng, seconds):
        """Write the checkpoint atomically (``seconds``: total training time so far)."""
        import torch

        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "identity": self.identity,
            "epoch": self.epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": rng.bit_generator.state,
            "history": self.history,
            "best_state": self.best_state,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "initial_metrics": self.initial_metrics,
            "baselines": self.baselines,
            "band_means": self.band_means,
            "seconds": seconds,
        }
        atomic_torch_save(payload, path)

    @classmethod
    def resume(cls, path, identity, *, model, optimizer, scaler, rng, lr):
        """The state saved at ``path``, with ``model``, ``optimizer``, ``scaler`` and the
        generators restored in place; the learning rate becomes ``lr``."""
        import torch

        path = Path(path)
        if not path.exists():
            raise CtstfmError(
                f"Resuming was asked for but there is no checkpoint {path}; start a new training instead, or give "
                "the output model of the interrupted run."
            )
        saved = load_checkpoint(path)
        for key, value in identity.items():
            if saved["identity"].get(key) != value:
                raise CtstfmError(
                    f"The checkpoint {path} was made from other data or another network ({key} differs); "
                    "start a new training instead of resuming, or give the same series and settings."
                )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        rng.bit_generator.state = saved["numpy_rng"]
        return cls(
            identity=identity,
            epoch=int(saved["epoch"]),
            history=list(saved["history"]),
            best_state=saved["best_state"],
            best_epoch=int(saved["best_epoch"]),
            best_metrics=dict(saved["best_metrics"]),
            initial_metrics=dict(saved["initial_metrics"]),
            baselines=dict(saved.get("baselines") or {}),
            band_means=list(saved.get("band_means") or []),
            seconds_before=float(saved.get("seconds", 0.0)),
        )


def load_checkpoint(path):
    """The checkpoint dict at ``path`` (``weights_only``); a clear error for anything else."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise CtstfmError(
            f"The checkpoint {path} cannot be read ({exc}); delete it and start a new training."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CtstfmError(f"{path} is not a CTSTFM training checkpoint; start a new training instead of resuming.")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise CtstfmError(f"The checkpoint {path} was written by a newer model_core; update the plugin to resume it.")
    return state
