"""Device choice: auto takes CUDA, then Apple's MPS, then the CPU. Availability is injected
(a ``DeviceAvailability``), so every branch runs on a CPU-only machine with the real torch."""

import pytest
import torch

from model_core import MPS_FALLBACK
from model_core.device import (
    DEVICES,
    DeviceAvailability,
    autocast,
    choose_device,
    device_note,
    mixed_precision_dtype,
    resolve_device,
)
from model_core.errors import CtstfmError

NOTHING, MPS, CUDA, BOTH = DeviceAvailability(), DeviceAvailability(mps=True), DeviceAvailability(cuda=2), \
    DeviceAvailability(cuda=1, mps=True)


@pytest.mark.parametrize("available, expected", [(BOTH, "cuda"), (CUDA, "cuda"), (MPS, "mps"), (NOTHING, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(available, expected):
    assert choose_device("auto", available) == expected
    assert choose_device(None, available) == expected
    assert resolve_device("auto", available) == torch.device(expected)


def test_explicit_choices_are_checked_against_what_exists():
    assert choose_device("mps", MPS) == "mps" and choose_device("cpu", NOTHING) == "cpu"
    assert choose_device("CUDA:1", CUDA) == "cuda:1"
    with pytest.raises(CtstfmError, match="Apple GPU .mps. was asked for.*'auto' or 'cpu'"):
        choose_device("mps", CUDA)
    with pytest.raises(CtstfmError, match="CUDA device was asked for"):
        choose_device("cuda", MPS)
    with pytest.raises(CtstfmError, match="no GPU cuda:2; this machine has 2"):
        choose_device("cuda:2", CUDA)
    with pytest.raises(CtstfmError, match="Unknown device 'tpu'; use one of auto, cpu, cuda, mps"):
        choose_device("tpu", BOTH)


def test_this_machine_is_detected():
    here = DeviceAvailability.detect()
    assert here.cuda == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert here.mps == torch.backends.mps.is_available()


def test_mixed_precision_covers_mps():
    assert mixed_precision_dtype("mps") == torch.float16
    assert mixed_precision_dtype(torch.device("cpu")) is None
    x = torch.ones(2, 2)
    with autocast(None, "mps"):  # no autocast at all in float32: runs anywhere
        assert (x @ x).dtype == torch.float32


def test_the_log_says_whether_mps_falls_back_to_the_cpu(monkeypatch):
    assert device_note("cpu") is None and device_note(torch.device("cuda", 0)) is None
    monkeypatch.setenv(MPS_FALLBACK, "1")
    assert "run on the CPU instead" in device_note(torch.device("mps"))
    monkeypatch.delenv(MPS_FALLBACK)
    assert f"set {MPS_FALLBACK}=1 before starting" in device_note("mps")


def test_device_indices_keep_their_meaning(qgis_app):
    """Users' scripts and models pass DEVICE as an index: mps is appended, 0-2 are unchanged."""
    from qgis.core import QgsApplication

    assert DEVICES == ("auto", "cpu", "cuda", "mps")
    for alg_id in ("ctstfm:fuse", "ctstfm:train", "ctstfm:starfm"):
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda", "mps"]
