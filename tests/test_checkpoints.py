import pickle
from pathlib import Path

import pytest
import torch

from pipeline.core.checkpoints import canonicalize_state_dict, load_checkpoint, load_state_dict
from pipeline.core.errors import MissingWeightsError, WeightsError


def _tensors():
    return {"conv.weight": torch.arange(6.0).reshape(2, 3), "conv.bias": torch.ones(2)}


@pytest.mark.parametrize(
    "wrapped",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "global_step": 3},
        lambda sd: {"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}},
        lambda sd: {"params": sd},
    ],
)
def test_official_wrappers_unwrap_to_the_same_dict(tmp_path: Path, wrapped):
    path = tmp_path / "w.pth"
    torch.save(wrapped(_tensors()), path)
    loaded = load_state_dict(path, "test model")
    assert loaded.keys() == _tensors().keys()
    for key, value in _tensors().items():
        assert torch.equal(loaded[key], value)


def test_params_ema_preferred_over_params():
    sd = _tensors()
    out = canonicalize_state_dict({"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd})
    assert torch.equal(out["conv.bias"], torch.ones(2))


def test_missing_empty_truncated_files(tmp_path: Path):
    with pytest.raises(MissingWeightsError, match="not found"):
        load_checkpoint(tmp_path / "none.pth", "Wav2Lip generator")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        load_checkpoint(empty)
    good = tmp_path / "good.pth"
    torch.save(_tensors(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_checkpoint(cut)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.marker),))


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _tensors(), "extra": _Payload()}, evil)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refused by the safe loader"):
        load_checkpoint(evil)
    assert not marker.exists()
    legacy = tmp_path / "legacy.pth"
    with open(legacy, "wb") as handle:
        pickle.dump({"w": _Payload()}, handle)
    with pytest.raises(WeightsError):
        load_checkpoint(legacy)
    assert not marker.exists()
