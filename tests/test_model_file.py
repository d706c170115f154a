"""The model file: round trip, metadata, and refusal of every kind of bad file (code never runs)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from model_core.errors import CtstfmError
from model_core.model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LoadedModel,
    ModelFileError,
    load_model,
    read_model_metadata,
    save_model,
)
from model_core.network import CTSTFM, DEFAULT_BANDS, CTSTFMConfig, count_parameters

CONFIG = CTSTFMConfig(bands=4, width=8, encoder_blocks=1, fusion_blocks=1, heads=2)
BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = CTSTFM(CONFIG).eval()
    provenance = {"training_data": "synthetic", "epochs": 3, "validation": {"mae": 0.0123}, "tiles": (1, 2)}
    path = save_model(tmp_path / "m.pt", model, config=CONFIG, band_names=BANDS, scale=1e-4, provenance=provenance)
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel)
    assert not loaded.model.training
    assert loaded.config == CONFIG
    assert loaded.band_names == BANDS
    assert loaded.scale == 1e-4
    assert loaded.provenance == {"training_data": "synthetic", "epochs": 3, "validation": {"mae": 0.0123}, "tiles": [1, 2]}
    assert loaded.path == path
    g = torch.Generator().manual_seed(1)
    coarse, fine = torch.rand(1, 4, 29, 31, generator=g), torch.rand(1, 4, 29, 31, generator=g)
    with torch.no_grad():
        assert torch.equal(loaded.model(coarse, fine), model(coarse, fine))


def test_file_holds_only_plain_data_and_tensors(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT_NAME and payload["format_version"] == FORMAT_VERSION
    assert set(payload) == {"format", "format_version", "config", "band_names", "scale", "provenance", "state_dict"}
    assert payload["config"] == CONFIG.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_metadata_without_building_the_network(saved):
    model, path = saved
    meta = read_model_metadata(path)
    assert meta.config == CONFIG and meta.band_names == BANDS and meta.scale == 1e-4
    assert meta.parameters == count_parameters(model)
    assert meta.provenance["epochs"] == 3


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, saved):
    model, _ = saved
    target = tmp_path / "sub" / "model.pt"
    save_model(target, model.state_dict(), config=CONFIG.to_dict(), band_names=BANDS, scale=2.5e-5)
    save_model(target, model, config=CONFIG, band_names=BANDS, scale=1e-4)  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pt"]
    assert load_model(target).scale == 1e-4


def test_save_refuses_inconsistent_input(tmp_path, saved):
    model, _ = saved
    with pytest.raises(ModelFileError, match="band names"):
        save_model(tmp_path / "a.pt", model, config=CONFIG, band_names=BANDS[:3], scale=1e-4)
    with pytest.raises(ModelFileError, match="scale"):
        save_model(tmp_path / "a.pt", model, config=CONFIG, band_names=BANDS, scale=0)
    with pytest.raises(ModelFileError, match="do not fit"):
        save_model(tmp_path / "a.pt", model, config=CTSTFMConfig(bands=4), band_names=BANDS, scale=1e-4)
    with pytest.raises(ModelFileError, match="provenance"):
        save_model(tmp_path / "a.pt", model, config=CONFIG, band_names=BANDS, scale=1e-4, provenance={"x": object()})
    assert not (tmp_path / "a.pt").exists()


class Exploit:
    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    Exploit.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT_NAME, "format_version": 1, "payload": Exploit()}, path)
    with pytest.raises(ModelFileError, match="contains Python code"):
        load_model(path)
    with pytest.raises(ModelFileError):
        read_model_metadata(path)
    assert not marker.exists()
    import pickle

    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Exploit(), protocol=4))
    with pytest.raises(ModelFileError, match="evil.pkl"):
        load_model(plain)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "directory", "missing"])
def test_broken_files_are_refused_with_the_file_named(tmp_path, saved, kind):
    _, good = saved
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and ";" in message and "\n" not in message
    assert isinstance(info.value, CtstfmError)


def test_other_dicts_are_refused(tmp_path, saved):
    model, good = saved
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ModelFileError, match="bare state dict"):
        load_model(bare)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "weights": [1, 2]}, other)
    with pytest.raises(ModelFileError, match="not a ctstfm-model file"):
        load_model(other)
    payload = torch.load(good, weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save(dict(payload, format_version=FORMAT_VERSION + 1), newer)
    with pytest.raises(ModelFileError, match="update the ctstfm plugin"):
        load_model(newer)
    unknown = tmp_path / "unknown.pt"
    torch.save(dict(payload, config=dict(payload["config"], attention="spatial")), unknown)
    with pytest.raises(ModelFileError, match="attention"):
        load_model(unknown)


def test_state_dict_mismatch_is_refused(tmp_path, saved):
    _, good = saved
    payload = torch.load(good, weights_only=True)
    state = dict(payload["state_dict"])
    state.pop(next(iter(state)))
    missing = tmp_path / "missing_key.pt"
    torch.save(dict(payload, state_dict=state), missing)
    with pytest.raises(ModelFileError, match="do not match its configuration"):
        load_model(missing)
    broken = dict(payload["state_dict"])
    name = next(iter(broken))
    broken[name] = broken[name].clone().fill_(float("nan"))
    nan = tmp_path / "nan.pt"
    torch.save(dict(payload, state_dict=broken), nan)
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(nan)
    wrong = tmp_path / "wrong_width.pt"
    torch.save(dict(payload, config=dict(payload["config"], width=12, heads=1)), wrong)
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(wrong)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "model_core", *args], env=env, capture_output=True, text=True)


def test_cli_init_then_info(tmp_path):
    out = tmp_path / "fresh.pt"
    result = run_cli("init", "--bands", "6", "--out", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    loaded = load_model(out)
    assert loaded.band_names == list(DEFAULT_BANDS) and loaded.scale == 1e-4
    assert loaded.provenance["seed"] == 3 and loaded.provenance["trained"] is False

    info = run_cli("info", "--model", str(out), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["parameters"] == count_parameters(loaded.model) == 670_935
    assert data["config"] == CTSTFMConfig().to_dict()
    assert data["band_names"] == list(DEFAULT_BANDS) and data["scale"] == 1e-4
    assert data["provenance"]["seed"] == 3

    four = tmp_path / "four.pt"
    assert run_cli("init", "--bands", "4", "--width", "8", "--out", str(four)).returncode == 0
    assert load_model(four).band_names == ["band1", "band2", "band3", "band4"]
    text = run_cli("info", "--model", str(four))
    assert text.returncode == 0 and "band1, band2" in text.stdout


def test_cli_info_without_model_and_errors(tmp_path):
    data = json.loads(run_cli("info", "--bands", "4", "--json").stdout)
    assert data["parameters"] == count_parameters(CTSTFM(CTSTFMConfig(bands=4)))
    assert data["config"]["bands"] == 4 and "band_names" not in data
    missing = run_cli("info", "--model", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "nope.pt" in missing.stderr and "Traceback" not in missing.stderr
    bad_width = run_cli("init", "--bands", "6", "--width", "18", "--out", str(tmp_path / "x.pt"))
    assert bad_width.returncode == 2 and "norm_groups" in bad_width.stderr
