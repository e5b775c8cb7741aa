"""Nothing from shared storage is unpickled. A trainer_state.pt that carries code is refused before the
code runs; a checkpoint of another run (fingerprint) is not loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pipelines.runtime import checkpoints
from pipelines.training.checkpoint_state import STATE_FILE, load_trainer_state


class _Payload:
    """Unpickling this runs ``os.system`` (what an attacker with write access to the bucket would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(folder: Path, state, fingerprint: str = "f" * 16) -> Path:
    folder.mkdir(parents=True)
    torch.save(state, folder / STATE_FILE)
    (folder / checkpoints.META_FILE).write_text(json.dumps(checkpoints.meta(fingerprint, 2, 4, "k")))
    return folder


def test_a_state_file_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _checkpoint(tmp_path / "ckpt", {"step": 2, "optimizer": _Payload(marker)})
    with pytest.raises(RuntimeError, match="refusing to load .*trainer_state"):
        load_trainer_state(ckpt, "f" * 16)
    assert not marker.exists()


def test_a_plain_tensor_state_loads(tmp_path):
    state = {"step": 2, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]},
             "scheduler": {"last_epoch": 2}}
    got = load_trainer_state(_checkpoint(tmp_path / "ok", state), "f" * 16)
    assert got["step"] == 2 and torch.equal(got["optimizer"]["state"][0]["exp_avg"], torch.ones(3))


def test_a_checkpoint_of_another_run_is_not_loaded(tmp_path):
    ckpt = _checkpoint(tmp_path / "other", {"step": 2}, fingerprint="0" * 16)
    assert load_trainer_state(ckpt, "f" * 16) is None
