"""Writes that are whole or absent: a crash, a killed pod or a full disk never leaves half a file or a
folder that was deleted before its replacement was in place.

* :func:`write_text`: written to a temporary file in the same folder, flushed to disk, renamed over the
  target (``rename`` within one filesystem is atomic: readers see the old file or the new one).
* :func:`replace_dir`: a finished folder takes the place of an existing one. On Linux the two are exchanged
  in one ``renameat2(RENAME_EXCHANGE)`` call and the old one is then deleted; where that call is missing
  (another OS, a filesystem without it) the old folder is first renamed aside to ``.<name>.old-*`` and the
  new one renamed in: a crash between those two renames leaves the old folder beside, never nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one syscall (Linux renameat2); False where the OS or filesystem cannot."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


def replace_dir(new: str | Path, dest: str | Path) -> Path:
    """Move the finished folder ``new`` to ``dest`` (same filesystem), replacing what is there atomically
    (see the module docstring); the old contents are deleted afterwards."""
    new, dest = Path(new), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        new.rename(dest)
        return dest
    if _exchange(new, dest):  # dest now holds the new folder, ``new`` the old one
        shutil.rmtree(new, ignore_errors=True)
        return dest
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    dest.rename(aside / "old")
    new.rename(dest)
    shutil.rmtree(aside, ignore_errors=True)
    return dest
