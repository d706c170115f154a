"""Training under ``torchrun`` with the gloo backend on this machine's CPUs (model_core/distributed.py).

Three launches of two ranks each, on a tiny 3-date series (48 x 48 px, width-8 network,
16 px patches): one trains an epoch and is compared, weight by weight, with one
process doing the same steps on the whole global batch; one is stopped (SIGINT) on
rank 1 alone and must stop everywhere with rank 0 writing the model; one is killed on
rank 1 and must leave only its last complete checkpoint, which a single process resumes.
A fourth launch fuses a 5-date series (two groups of targets, one per rank) and must write the
files of one process.
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 3
# Two-image (the reference run below feeds no coarse image at T0).
TINY = ["--from-scratch", "--no-use-coarse-t0", "--max-minutes", "0", "--epochs", "1", "--batch-size", "2",
        "--patch-size", "16", "--patches-per-epoch", "4", "--width", "8", "--lr", "3e-3", "--seed", str(SEED),
        "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny_series(make_series):
    return make_series(kind="fields", count=3, size=48, seed=7)


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun_works():
    """Whether torchrun can start here: its rendezvous store uses libuv, which some builds lack
    (Debian's python3-torch 2.6: "use_libuv was requested but PyTorch was build without libuv
    support"); there torchrun itself cannot run, whatever model_core does."""
    import datetime

    try:
        store = torch.distributed.TCPStore("127.0.0.1", 0, 1, True, timeout=datetime.timedelta(seconds=5))
    except RuntimeError as exc:
        return "libuv" not in str(exc)
    del store
    return True


needs_torchrun = pytest.mark.skipif(not _torchrun_works(), reason="this torch build's torchrun cannot start (no libuv)")


def _torchrun(args, ranks=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "model_core", *args]
    return subprocess.Popen(command, cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _one_process_reference(manifest, steps, epoch=1):
    """The weights after ``steps`` steps of one process on each step's whole global batch: rank r's
    patches drawn from rank r's stream (distributed.seed_epoch), the two halves stacked."""
    from model_core.progress import Progress
    from model_core.raster import gdal_cache_limit
    from model_core.training.data import SeriesData
    from model_core.training.series import resolve_series
    from model_core.training.step import train_step
    from model_core.training.trainer import TrainSettings, open_data, prepare_run, start_model

    torch.set_num_threads(1)
    settings = TrainSettings.checked(epochs=1, batch_size=2, patch_size=16, patches_per_epoch=4, lr=3e-3, seed=SEED)
    pairs, manifests, _ = resolve_series(str(manifest), None)
    network = dict(init_model=None, from_scratch=True, width=8, predict_residual=False, residual_blur=0, scale=None,
                   use_coarse_t0=False)
    run = prepare_run(pairs, manifests, settings, network_options=network, device="cpu", progress=Progress())
    model, optimizer, scaler, rng, _ = start_model(run, ckpt_path=Path("/nonexistent.pt"), resume=False,
                                                   progress=Progress())
    data = SeriesData(run.pairs, scale=run.network.scale, bands=run.info.bands, resampling=run.resampling)
    with gdal_cache_limit():
        try:
            _, sampler = open_data(run, data, rng, Progress())
            ranks = []
            for rank in range(2):
                ranks.append(copy.copy(sampler))
                ranks[-1].rng = np.random.default_rng([SEED, rank, epoch])
            model.train()
            for _ in range(steps):
                halves = [rank.batch(1) for rank in ranks]
                coarse, fine0, fine1, valid = (torch.from_numpy(np.concatenate(parts)) for parts in zip(*halves))
                assert bool(valid.all()), "the simulated series has no nodata: the ranks' losses weigh equally"
                train_step(model, optimizer, scaler, coarse, fine0, fine1, valid, "cpu", None)
        finally:
            data.close()
    return model.state_dict()


@needs_torchrun
def test_two_ranks_train_the_model_of_one_process_on_the_global_batch(tiny_series, tmp_path):
    from model_core.model_file import load_model

    out = tmp_path / "two.pt"
    launch = _torchrun(["train", "--manifest", str(tiny_series.manifest), "--out", str(out), "--json", *TINY])
    stdout, stderr = launch.communicate(timeout=300)
    assert launch.returncode == 0, stderr[-3000:]
    printed = json.loads(stdout)  # rank 0 alone prints the result
    assert printed["model"] == str(out) and printed["epochs"] == 1

    info = subprocess.run([sys.executable, "-m", "model_core", "info", "--model", str(out), "--json"], cwd=str(ROOT),
                          env=_env(), capture_output=True, text=True, timeout=120)
    provenance = json.loads(info.stdout)["provenance"]
    assert provenance["world_size"] == 2 and provenance["batch_size"] == 2

    trained = load_model(str(out), map_location="cpu").model.state_dict()
    steps, lr = 2, 3e-3
    reference = _one_process_reference(tiny_series.manifest, steps=steps)
    initial = _initial_weights()
    differences = torch.cat([(trained[name].float() - value.float()).abs().flatten()
                             for name, value in reference.items()])
    # The same steps up to the order of float sums (gloo's all-reduce of two half-batch gradients vs
    # one batch) -- except where a gradient is itself at float-noise level (the conv biases just before a
    # GroupNorm, ~0.05% of the weights): Adam divides it by its own size, so the noise becomes an update of
    # up to ~lr per step there. Those elements stay within 2 lr per step; all others agree to 1e-5.
    assert float((differences > 1e-5).float().mean()) < 1e-3, int((differences > 1e-5).sum())
    assert float(differences.max()) <= 2 * lr * steps, float(differences.max())
    moved = torch.cat([(value - initial[name]).abs().flatten() for name, value in reference.items()])
    assert float((moved > 1e-3).float().mean()) > 0.5, "the steps must move most weights (else nothing is compared)"


def _initial_weights():
    from model_core.network import CTSTFM, CTSTFMConfig

    torch.manual_seed(SEED)
    return CTSTFM(CTSTFMConfig(bands=6, width=8)).state_dict()


def _rank_pid(parent, rank):
    """The pid of the worker process of ``rank`` started by the torchrun agent ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _long_run(series, out):
    many = list(TINY)
    many[many.index("--epochs") + 1] = "500"  # far more than run before the signal
    return _torchrun(["train", "--manifest", str(series.manifest), "--out", str(out), *many])


def _signal_rank_after_first_epoch(launch, checkpoint, signum, rank=1):
    """Once the first checkpoint exists, send ``signum`` to ``rank`` alone; wait for the run's end."""
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.exists() and launch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), launch.communicate(timeout=30)[1][-3000:]
        victim = _rank_pid(launch.pid, rank)
        assert victim, f"rank {rank}'s worker process was not found"
        os.kill(victim, signum)
        launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()


@needs_torchrun
def test_a_stop_asked_on_one_rank_stops_all_and_writes_the_best_model(tiny_series, tmp_path):
    from model_core.model_file import load_model
    from model_core.training.checkpoint import checkpoint_path

    out = tmp_path / "stopped.pt"
    launch = _long_run(tiny_series, out)
    _signal_rank_after_first_epoch(launch, checkpoint_path(out), signal.SIGINT)  # Ctrl-C on rank 1 only
    provenance = load_model(str(out), map_location="cpu").provenance  # rank 0 wrote it: it heard the stop
    assert provenance["cancelled"] and provenance["world_size"] == 2
    assert 1 <= provenance["epochs"] < 500


@needs_torchrun
def test_a_rank_killed_leaves_its_last_checkpoint_which_one_process_resumes(tiny_series, tmp_path):
    from model_core.model_file import load_model
    from model_core.training import train
    from model_core.training.checkpoint import checkpoint_path, load_checkpoint

    out = tmp_path / "killed.pt"
    checkpoint = checkpoint_path(out)
    launch = _long_run(tiny_series, out)
    _signal_rank_after_first_epoch(launch, checkpoint, signal.SIGKILL)
    assert launch.returncode != 0, "killing a rank must fail the whole run"
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == [checkpoint.name, "killed_training.csv"], left  # no model, no half-written file
    done = int(load_checkpoint(checkpoint)["epoch"])
    assert 1 <= done < 500

    result = train(str(tiny_series.manifest), str(out), epochs=done + 1, batch_size=2, patch_size=16,
                   patches_per_epoch=4, lr=3e-3, width=8, seed=SEED, device="cpu", resume=True,
                   from_scratch=True, use_coarse_t0=False, max_minutes=0)
    assert result.epochs == done + 1 and len(result.history) == done + 1
    assert load_model(str(out), map_location="cpu").provenance["world_size"] == 1


@needs_torchrun
def test_two_ranks_fuse_the_series_files_of_one_process(make_series, tmp_path):
    from osgeo import gdal

    from model_core import paths
    from model_core.raster import read_metadata
    from model_core.series import fuse_series
    from model_core.training.series import write_manifest

    torch.set_num_threads(1)
    series = make_series(kind="fields", count=5, size=64, seed=3, interval_days=16)  # test_series's five_dates
    rows = [(it.date, it.fine if i in (0, 2, 4) else "", it.coarse) for i, it in enumerate(series.items)]
    manifest = write_manifest(tmp_path / "m.csv", rows)  # targets 1 and 3: two groups, one per rank
    options = ["--tile", "64", "--overlap", "8", "--device", "cpu"]
    launch = _torchrun(["fuse-series", "--manifest", str(manifest), "--model", str(paths.DEFAULT_MODEL),
                        "--out", str(tmp_path / "two"), "--json", *options])
    stdout, stderr = launch.communicate(timeout=300)
    assert launch.returncode == 0, stderr[-3000:]
    two = json.loads(stdout)  # rank 0 alone prints, and knows rank 1's date
    one = fuse_series(manifest, str(paths.DEFAULT_MODEL), tmp_path / "one", tile=64, overlap=8, device="cpu")
    assert one.groups == two["groups"] == 2 and len(two["written"]) == 2
    assert two["tiles"] == one.tiles  # summed over the ranks: each group was fused once, not on both ranks
    assert sorted(two["files"]) == sorted(one.files) == [str(series.dates[1]), str(series.dates[3])]
    for day, path in one.files.items():
        ours, theirs = gdal.Open(path), gdal.Open(two["files"][day])
        np.testing.assert_array_equal(theirs.ReadAsArray(), ours.ReadAsArray())
        assert theirs.GetGeoTransform() == ours.GetGeoTransform() and read_metadata(two["files"][day]) == read_metadata(path)
    assert (tmp_path / "two" / "index.csv").read_bytes() == Path(one.index).read_bytes()
    assert (tmp_path / "two" / "stack.vrt").read_bytes() == Path(one.stack).read_bytes()


def test_a_plain_process_is_one_rank_without_a_process_group():
    from model_core import distributed
    from model_core.progress import Progress

    assert distributed.launched_by_torchrun({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert not distributed.launched_by_torchrun({"RANK": "1"})
    here = distributed.world()
    assert (here.rank, here.size, here.distributed, here.main) == (0, 1, False, True)
    layer = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(layer, "cpu") is layer  # no DDP wrapper
    progress = Progress()
    assert distributed.rank_progress(progress) is progress
    assert distributed.rank_counts([4, 3]) == [4, 3] and distributed.share_patches(3, 7, progress) == 7
    assert distributed.rank_device("cuda") == "cuda"


def test_a_command_that_cannot_share_its_work_is_refused_under_torchrun(monkeypatch):
    from model_core import distributed
    from model_core.errors import CtstfmError

    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CtstfmError, match="'fuse' does not share its work"):
        with distributed.session("fuse"):
            pass
