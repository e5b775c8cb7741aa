"""Writes of merged folders, checkpoint copies and reports are whole or absent."""

from pathlib import Path

import pytest

from pipelines.runtime import atomic


def _tree(root: Path, text: str) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "weights.bin").write_text(text)
    (root / "sub" / "config.json").write_text(text)
    return root


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def test_write_text_replaces_whole_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    atomic.write_text(target, "new")
    assert target.read_text() == "new" and _siblings(target) == []
    with pytest.raises(TypeError):
        atomic.write_text(target, 123)  # fails mid-write: the old file is intact, no temporary file is left
    assert target.read_text() == "new" and _siblings(target) == []


def test_the_exchange_syscall_swaps_two_folders(tmp_path):
    a, b = _tree(tmp_path / "a", "A"), _tree(tmp_path / "b", "B")
    assert atomic._exchange(a, b)  # Linux with glibc >= 2.28 (this machine and CI)
    assert (a / "weights.bin").read_text() == "B" and (b / "weights.bin").read_text() == "A"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_replace_dir_swaps_in_the_new_folder(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = _tree(tmp_path / "merged", "old")
    new = _tree(tmp_path / ".merged-staging" / "model", "new")
    atomic.replace_dir(new, dest)
    assert (dest / "weights.bin").read_text() == "new" and (dest / "sub" / "config.json").read_text() == "new"
    assert not new.exists() and not any(p.name.startswith(".merged.old-") for p in tmp_path.iterdir())
    fresh = _tree(tmp_path / "fresh-new", "x")
    atomic.replace_dir(fresh, tmp_path / "absent")  # no old folder: a plain rename
    assert (tmp_path / "absent" / "weights.bin").read_text() == "x"


def test_a_crash_between_the_fallback_renames_keeps_the_old_folder(tmp_path, monkeypatch):
    """Where the exchange is missing: the old folder is renamed aside first, so a crash right after leaves it
    beside (recoverable), never a deleted model and no new one."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    dest = _tree(tmp_path / "merged", "old")
    new = _tree(tmp_path / "staging", "new")
    real_rename = Path.rename

    def crash_on_the_second(self, target):
        if self == new:
            raise OSError("killed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_the_second)
    with pytest.raises(OSError, match="killed"):
        atomic.replace_dir(new, dest)
    (aside,) = tmp_path.glob(".merged.old-*/old")
    assert (aside / "weights.bin").read_text() == "old" and (new / "weights.bin").read_text() == "new"
