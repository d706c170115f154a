"""Several processes, one job: the one place that knows about ``torch.distributed`` (``torchrun``).

``torchrun`` starts one process per rank and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus the rendezvous address) in each; :func:`session` (entered by the
CLI around every command) then joins the process group, with the ``nccl`` backend
for CUDA tensors when CUDA is there and ``gloo`` otherwise (and for CPU tensors). A
plain ``python -m model_core`` run has no such environment: :func:`world` says one
rank, no process group is made, no model is wrapped and every helper below is a
no-op, so single-process runs are untouched.

Training semantics under ``torchrun`` (docs/training.md, docs/scale-out.md):

* ``batch_size`` and ``patches_per_epoch`` are **global**: each of K ranks trains on
  ``batch_size / K`` patches per step (the batch must divide by K; the epoch's patch
  count is rounded up to a multiple of K). DDP averages the ranks' gradients, so a step
  is the step of one process on the whole batch (exactly so when every patch is fully
  valid; the masked loss weighs ranks equally otherwise). The learning rate is that
  of the global batch: no scaling with K.
* Rank r draws its patches from ``default_rng([seed, r, epoch])``: streams that never
  repeat each other, and that a resumed run finds again without saved state, whatever
  the number of ranks the checkpoint was written with.
* Every rank validates (the same weights on the same windows: equal metrics, so every
  rank takes the same best-epoch decision); rank 0 alone logs and writes the
  checkpoint, the reports and the model, every file atomically.
* A stop asked on any rank (Ctrl-C, QGIS cancel) is all-reduced before every step, so
  all ranks stop at the same step. A rank that dies makes torchrun end the others;
  nothing partial is left because every write is atomic.

Series fusion under ``torchrun`` (``fuse-series``, model_core/series.py): every rank plans the same
targets and groups, rank r fuses groups r, r + K, r + 2K, ... (round robin in date order) with the
same atomic writer; after the ranks meet, rank 0 alone checks every date's file on disk and writes
the index, the stack and the quicklook. The files equal those of one process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from dataclasses import dataclass

from .errors import Cancelled, CtstfmError, OptionError
from .progress import Progress

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
SHARED_COMMANDS = ("train", "fuse-series")  # the commands that share their work between torchrun's ranks
# How long a rank waits in a collective for the others, per command (torch's default otherwise): fuse-series
# ranks meet once at the end, and the last rank's dates may take hours longer than the first's.
WAIT_LIMITS = {"fuse-series": datetime.timedelta(days=7)}


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank ``rank`` of ``size`` (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (a plain single-process run)

    @property
    def main(self):
        """Whether this rank logs and writes the outputs."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.backend is not None


def launched_by_torchrun(environ=None):
    """Whether ``torchrun`` (or an equivalent launcher) set this process's rank variables."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARIABLES)


def choose_backend():
    """``nccl`` for CUDA tensors when CUDA is there, ``gloo`` for CPU tensors always (so a ``--device cpu`` run,
    and the small stop/loss reductions done on the CPU, work on a GPU machine too)."""
    import torch

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def world():
    """The :class:`World` of this process (one rank when no process group was joined)."""
    try:
        import torch.distributed as dist
    except ImportError:  # a torch built without distributed support
        return World()
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), str(dist.get_backend()))


@contextlib.contextmanager
def session(command):
    """Join the process group for the duration of ``command`` when run under torchrun; else nothing.
    A command that cannot share its work between ranks is refused (each rank would redo it all)."""
    if not launched_by_torchrun():
        yield World()
        return
    if command not in SHARED_COMMANDS and int(os.environ["WORLD_SIZE"]) > 1:
        raise CtstfmError(
            f"'{command}' does not share its work between torchrun's ranks (only {', '.join(SHARED_COMMANDS)} "
            f"does); run it as python -m model_core {command} ..."
        )
    import torch
    import torch.distributed as dist

    backend = choose_backend()
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=WAIT_LIMITS.get(command))  # None: torch's default
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield world()
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def _interrupt(signum, frame):
    """torchrun ends the other ranks with SIGTERM when one fails: stop as on Ctrl-C, so that a file
    being written is removed (the atomic writers clean up on any exception) instead of left half-done."""
    raise KeyboardInterrupt


def rank_device(device):
    """``device`` for this rank: a bare ``cuda`` becomes this rank's GPU ``cuda:LOCAL_RANK``."""
    here = world()
    if here.distributed and str(device) == "cuda":
        return f"cuda:{here.local_rank}"
    return str(device)


def share_patches(batch_size, patches_per_epoch, progress):
    """The epoch's global patch count, a multiple of the number of ranks; a batch that ranks cannot
    share equally is an :class:`OptionError`."""
    size = world().size
    if size == 1:
        return patches_per_epoch
    if batch_size % size:
        raise OptionError(
            f"The batch size {{batch_size}} is {batch_size}, which {size} ranks cannot share equally: the batch is "
            f"global under torchrun; give a multiple of {size}.", "batch_size",
        )
    rounded = -(-patches_per_epoch // size) * size
    if rounded != patches_per_epoch:
        progress.info(f"{patches_per_epoch} patches per epoch rounded up to {rounded} to share them among "
                      f"{size} ranks.")
    return rounded


def rank_counts(counts):
    """This rank's share of each step's global patch count."""
    size = world().size
    return [count // size for count in counts]


def seed_epoch(sampler, seed, epoch):
    """Under torchrun, give ``sampler`` this rank's own patch stream for ``epoch``."""
    import numpy as np

    here = world()
    if here.distributed:
        sampler.rng = np.random.default_rng([int(seed), here.rank, int(epoch)])


def wrap_model(model, device):
    """``model`` in DistributedDataParallel under torchrun (gradients all-reduced), else ``model``."""
    here = world()
    if not here.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [int(str(device).split(":")[1])] if str(device).startswith("cuda:") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def check_stop(progress):
    """:meth:`Progress.check` for all ranks at once: raises :class:`Cancelled` on every rank when any asked to stop."""
    if not isinstance(progress, RankProgress):
        progress.check()
        return
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if progress.stop_asked() else 0.0])  # on the CPU: gloo
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0:
        raise Cancelled()


def any_rank(flag):
    """Whether ``flag`` is true on any rank (``flag`` itself in a single-process run): one decision
    all ranks act on, so none waits for the others in a collective they skipped."""
    if not world().distributed:
        return bool(flag)
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0])  # on the CPU: gloo
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.item() > 0


def sum_over_ranks(*values):
    """The sums of ``values`` over all ranks (the values themselves in a single-process run)."""
    if not world().distributed:
        return values
    import torch
    import torch.distributed as dist

    total = torch.tensor([float(value) for value in values], dtype=torch.float64)
    dist.all_reduce(total)
    return tuple(total.tolist())


def barrier():
    """Wait for every rank (nothing in a single-process run)."""
    if world().distributed:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. creates the output folder), the other ranks after it."""
    here = world()
    if not here.main:
        barrier()
    yield
    if here.main:
        barrier()


class RankProgress(Progress):
    """The progress a rank reports to under torchrun: rank 0's messages only, and no cancel of its own.

    A local stop request (:meth:`stop_asked`) is acted on only where all ranks agree on it
    (:func:`check_stop`), so no rank leaves a collective the others are waiting in.
    """

    def __init__(self, progress, main):
        self.progress, self.main = progress, main

    def update(self, fraction, message=None):
        if self.main:
            self.progress.update(fraction, message)

    def info(self, message):
        if self.main:
            self.progress.info(message)

    def canceled(self):
        return False

    def stop_asked(self):
        return self.progress.canceled()


def rank_progress(progress):
    """``progress`` as this rank uses it: itself in a single process, a :class:`RankProgress` under torchrun."""
    here = world()
    return RankProgress(progress, here.main) if here.distributed else progress
