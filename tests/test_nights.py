"""Each night's outputs in their own folder (``steps/nights.py``): a finished run's outputs move under
``nights/`` when the next run starts; an unfinished one stays to be resumed."""

import json

from pipelines.steps.nights import archive_previous_night


def _night(out, finished=True):
    for name in ("data", "calibration", "train/adapter", "eval"):
        (out / name).mkdir(parents=True)
        (out / name / "file.json").write_text(name)
    (out / "merged").mkdir()
    for name in ("model.safetensors", "README.md", "fora_prompt.json"):
        (out / "merged" / name).write_text(name)
    (out / "checkpoints").mkdir()
    if finished:
        (out / "summary.json").write_text(json.dumps({"run_id": "0123456789abcdef", "registration": {"version": 3}}))


def test_a_finished_night_moves_under_nights_without_its_merged_weights(tmp_path):
    _night(tmp_path)
    night = archive_previous_night(tmp_path, "fora-chat")
    assert night.parent == tmp_path / "nights" and night.name.endswith("-01234567")
    for name in ("data", "calibration", "train", "eval", "summary.json"):
        assert (night / name).exists() and not (tmp_path / name).exists()
    assert (night / "train" / "adapter" / "file.json").read_text() == "train/adapter"
    assert sorted(p.name for p in (night / "merged").iterdir()) == ["README.md", "fora_prompt.json", "model_uri.txt"]
    assert (night / "merged" / "model_uri.txt").read_text().strip() == "models:/fora-chat/3"
    assert not (tmp_path / "merged").exists()
    assert (tmp_path / "checkpoints").is_dir()  # shared by every night


def test_an_unfinished_run_stays_to_be_resumed(tmp_path):
    _night(tmp_path, finished=False)
    assert archive_previous_night(tmp_path, "fora-chat") is None
    assert (tmp_path / "train" / "adapter").is_dir() and not (tmp_path / "nights").exists()
