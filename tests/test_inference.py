"""model_core.inference: every fast path against fp32 eager on small tiles, the per-CPU cache, fallbacks, threads."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from model_core import inference
from model_core.errors import CtstfmError
from model_core.network import CTSTFM, CTSTFMConfig
from model_core.progress import Progress

# Small but complete: residual first guess with a box, two heads (block-diagonal attention), all blocks.
SMALL = CTSTFMConfig(bands=6, width=8, encoder_blocks=1, fusion_blocks=1, heads=2, predict_residual=True,
                     residual_blur=5)
# "exact" changes only float rounding; MKSB's softmax over pixels (logits of tens on random weights)
# turns a 1e-6 rounding difference of its convolution into ~4e-5 on this small random network.
EXACT_ATOL = 1e-4
needs_bf16 = pytest.mark.skipif(not inference.has_native_bf16(), reason="this CPU has no native bf16")
# Inductor compiles for 45 CPU-seconds and more even on a tiny network (cold cache), beyond this
# suite's budget: set CTSTFM_TEST_COMPILE=1 to run it; make bench checks the compiled paths' accuracy.
needs_compiler = pytest.mark.skipif(
    not (inference.has_cxx_compiler() and os.environ.get("CTSTFM_TEST_COMPILE")),
    reason="torch.compile test: set CTSTFM_TEST_COMPILE=1 (needs a C++ compiler; ~1 min)",
)


@pytest.fixture(autouse=True)
def one_thread_and_private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CTSTFM_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """A trained-looking network: random weights, last layer scaled so the correction is not zero."""
    torch.manual_seed(0)
    net = CTSTFM(SMALL).eval()
    with torch.no_grad():
        last = net.ccd.layers[-1]
        torch.nn.init.kaiming_uniform_(last.weight, a=5**0.5)
        last.weight.mul_(0.3)
        for module in net.modules():  # GroupNorm affine and temperatures away from 1/0, as after training
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        for name, parameter in net.named_parameters():
            if "temperature" in name:
                parameter.uniform_(2.0, 8.0)
    return net


@pytest.fixture(scope="module")
def tiles():
    coarse, fine, truth = inference.sample_tiles(256, count=1)
    return coarse[..., 40:88, 8:72], fine[..., 40:88, 8:72], truth[..., 40:88, 8:72]  # 48 x 64: not square


def reference(model, tiles):
    with torch.inference_mode():
        return model(tiles[0], tiles[1])


@pytest.mark.parametrize("layout", inference.LAYOUTS)
def test_exact_path_equals_fp32_eager_up_to_rounding(model, tiles, layout):
    prepared = inference.prepare(model, "exact", layout)
    out = prepared(tiles[0], tiles[1])
    assert prepared.path == "exact" and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(model, tiles), rtol=0, atol=EXACT_ATOL)
    # the trained model itself is untouched (folding works on a copy)
    assert type(model.cfm.blocks[0].cetb).__name__ == "CETB"


def test_exact_path_handles_batches_of_tiles(model, tiles):
    coarse, fine = torch.cat([tiles[0], tiles[0].flip(-1)]), torch.cat([tiles[1], tiles[1].flip(-1)])
    out = inference.prepare(model, "exact")(coarse, fine)
    torch.testing.assert_close(out, reference(model, (coarse, fine)), rtol=0, atol=EXACT_ATOL)


@needs_bf16
def test_bf16_path_is_close_to_fp32_with_the_default_model(tiles):
    from model_core.model_file import load_model
    from model_core.paths import DEFAULT_MODEL

    trained = load_model(DEFAULT_MODEL).model.eval()
    out = inference.prepare(trained, "bf16")(tiles[0], tiles[1])
    ref = reference(trained, tiles)
    assert out.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa (~0.4 % per value); the sample's MAE moves by ~0.03 % (docs/benchmarks.md)
    assert (out - ref).abs().max() < 0.02
    assert (out - ref).abs().mean() < 1e-3
    assert float((out - ref).abs().mean()) > 0  # it did run in bf16


def test_bf16_is_refused_without_native_support(model, monkeypatch):
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert "bf16" not in inference.available_paths()
    with pytest.raises(inference.PathUnavailable, match="native bfloat16"):
        inference.prepare(model, "bf16")


@needs_compiler
def test_compile_path_equals_fp32_eager(tiles):
    # the fusion blocks (the folded attention) without the encoders, on a 32 x 32 tile
    torch.manual_seed(1)
    small = CTSTFM(dataclasses.replace(SMALL, encoder_blocks=0)).eval()
    example = (tiles[0][..., :32, :32], tiles[1][..., :32, :32])
    prepared = inference.prepare(small, "compile", "channels_last", example)
    assert prepared.path == "compile" and prepared.setup_seconds > 0
    torch.testing.assert_close(prepared(*example), reference(small, example), rtol=0, atol=EXACT_ATOL)


def test_without_a_compiler_auto_and_compile_fall_back_to_eager_paths(model, tiles, monkeypatch):
    monkeypatch.setattr(inference, "has_cxx_compiler", lambda: False)
    assert not {"compile", "compile-bf16", "int8"} & set(inference.available_paths())
    messages = []

    class Recorder(Progress):
        def info(self, message):
            messages.append(message)

    prepared = inference.prepare_for_job(model, "compile", n_tiles=100, tile_shape=(48, 64), progress=Recorder())
    assert prepared.path == "exact"
    assert any("C++ compiler" in m for m in messages)
    torch.testing.assert_close(prepared(tiles[0], tiles[1]), reference(model, tiles), rtol=0, atol=EXACT_ATOL)
    # auto never picks a compiled path here, even where the cache says one was fastest
    entry = {"setup_s": 0.0, "tile": 256, "passed": True, "mae_change": 0.0}
    inference.write_cache(inference.cache_file(model), {"layout": "channels_last", "paths": {
        "eager": dict(entry, ms=1000.0), "exact": dict(entry, ms=900.0), "bf16": dict(entry, ms=500.0, passed=False),
        "compile": dict(entry, ms=10.0)}})
    assert inference.prepare_for_job(model, "auto", n_tiles=100, tile_shape=(48, 64)).path == "exact"


def test_a_failing_compile_falls_back_silently(model, tiles, monkeypatch):
    def broken_compile(*_args, **_kwargs):
        def fail(*_a, **_k):
            raise RuntimeError("C++ compile error: cannot find Python.h")
        return fail

    monkeypatch.setattr(inference, "has_cxx_compiler", lambda: True)
    monkeypatch.setattr(torch, "compile", broken_compile)
    prepared = inference.prepare_for_job(model, "compile", n_tiles=100, tile_shape=(48, 64))
    assert prepared.path == "exact"
    torch.testing.assert_close(prepared(tiles[0], tiles[1]), reference(model, tiles), rtol=0, atol=EXACT_ATOL)


def test_choice_is_measured_once_cached_and_a_corrupt_cache_is_ignored(model, monkeypatch):
    monkeypatch.setattr(inference, "has_cxx_compiler", lambda: False)  # keep the measurement short
    calls = []
    measure = inference.measure_paths
    monkeypatch.setattr(inference, "measure_paths", lambda *a, **k: calls.append(a[1]) or measure(*a, **k))
    path, layout = inference.choose_path(model, n_tiles=20, tile_pixels=64 * 64, sample_size=64)
    assert layout in inference.LAYOUTS and path in inference.available_paths()
    cache = inference.cache_file(model)
    data = json.loads(cache.read_text())
    assert data["layout"] == layout and data["cpu"] == inference.cpu_model()
    assert set(data["paths"]) >= {"eager", "exact"} and data["paths"]["exact"]["passed"]
    assert abs(data["paths"]["exact"]["mae_change"]) < 1e-4
    assert len(calls) == 1
    # read back from the cache: no second measurement, same answer
    assert inference.choose_path(model, n_tiles=20, tile_pixels=64 * 64, sample_size=64) == (path, layout)
    assert len(calls) == 1
    # a corrupt or foreign cache is ignored and measured again
    for junk in ("{not json", json.dumps([1, 2]), json.dumps({"version": 999, "paths": {}})):
        cache.write_text(junk)
        assert inference.read_cache(cache) == {}
    inference.choose_path(model, n_tiles=20, tile_pixels=64 * 64, sample_size=64)
    assert len(calls) == 2 and inference.read_cache(cache)["layout"] in inference.LAYOUTS


def test_auto_picks_the_fastest_passing_path_and_never_a_failing_one(model):
    cache = inference.cache_file(model)
    entry = {"setup_s": 0.0, "tile": 256, "passed": True, "mae_change": 0.0}
    paths = {"eager": dict(entry, ms=1000.0), "exact": dict(entry, ms=800.0), "bf16": dict(entry, ms=500.0),
             "compile": dict(entry, ms=100.0, passed=False, mae_change=0.05),
             "int8": {"error": "no torchao", "passed": False}}
    inference.write_cache(cache, {"layout": "contiguous", "paths": paths})
    path, layout = inference.choose_path(model, n_tiles=2, measure=False)
    assert layout == "contiguous"
    assert path == ("bf16" if inference.has_native_bf16() else "exact")
    # setup time counts: a path that compiles for 60 s loses on a small job, wins on a big one
    paths["bf16"] = dict(entry, ms=900.0)
    paths["compile"] = dict(entry, ms=400.0, setup_s=60.0)
    inference.write_cache(cache, {"layout": "channels_last", "paths": paths})
    if "compile" in inference.available_paths():
        assert inference.choose_path(model, n_tiles=40, measure=False)[0] == "exact"  # 60 + 16 s > 32 s
        assert inference.choose_path(model, n_tiles=400, measure=False)[0] == "compile"


def test_threads_default_and_restore():
    from osgeo import gdal

    assert 1 <= inference.default_threads(desktop=True) <= inference.default_threads() <= (os.cpu_count() or 1)
    before = torch.get_num_threads(), gdal.GetConfigOption("GDAL_NUM_THREADS")
    with inference.job_threads(1) as threads:
        assert threads == 1 and torch.get_num_threads() == 1
        assert int(gdal.GetConfigOption("GDAL_NUM_THREADS")) == max(1, (os.cpu_count() or 1) - 1)
    assert (torch.get_num_threads(), gdal.GetConfigOption("GDAL_NUM_THREADS")) == before
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(CtstfmError, match="threads"):
            inference.check_threads(bad)
    with pytest.raises(CtstfmError, match="inference path 'fastest'"):
        inference.check_path("fastest")


def test_both_faces_offer_every_path_and_threads():
    from model_core.options import FUSE

    assert FUSE.option("inference").choices == inference.PATHS
    assert FUSE.option("threads").unset == 0


def test_sample_tiles_are_reflectance_of_the_bundled_sample():
    coarse, fine, truth = inference.sample_tiles(256)
    assert coarse.shape == fine.shape == truth.shape == (4, 6, 256, 256)
    for tensor in (coarse, fine, truth):
        assert 0.0 <= float(tensor.min()) and float(tensor.max()) < 1.5 and np.isfinite(tensor.numpy()).all()
