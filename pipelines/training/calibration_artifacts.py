"""The calibrate step's files, written and read in one place.

``fisher_report.json``: the :class:`FisherReport` fields (scores (L,), ranking, N, tokens, seconds, peak memory)
plus ``selected_layers`` (the top K, or every layer for a method without Fisher selection) and, for FILet
methods, ``filet`` (the energy pass's cost figures). ``filet_energies.safetensors``: {module name: energies
(d_in,)} for FILet's initialisation. Either may sit in a folder or under an s3:// prefix.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fora_core import FisherReport

from ..runtime import storage

REPORT_FILE = "fisher_report.json"
FILET_FILE = "filet_energies.safetensors"
PROFILE_FILE = "fisher_profile.png"


def save_selection(out_dir: Path, report: FisherReport, selected: list[int], filet: dict | None = None) -> Path:
    """``fisher_report.json`` in ``out_dir``: the report, the selected layers and FILet's cost (when any)."""
    path = out_dir / REPORT_FILE
    report.save(path)
    data = json.loads(path.read_text())
    data["selected_layers"] = selected
    if filet is not None:
        data["filet"] = filet
    path.write_text(json.dumps(data, indent=2))
    return path


def load_selection(calib_dir: str | Path) -> tuple[FisherReport, list[int]]:
    """The Fisher report and selected layers from a calibration folder (or its s3:// copy)."""
    data = storage.read_json(storage.join(str(calib_dir), REPORT_FILE))
    selected = data.pop("selected_layers")
    data.pop("filet", None)  # FILet's cost figures ride along in the same file
    return FisherReport(**data), selected


def load_filet_energies(calib_dir: str | Path) -> dict:
    """{module name: energies (d_in,)} from a calibration folder (or its s3:// copy), for the train step."""
    from safetensors.torch import load_file

    location = storage.join(str(calib_dir), FILET_FILE)
    if not storage.is_uri(location):
        return load_file(location)
    with tempfile.TemporaryDirectory(prefix="fora-in-") as tmp:
        return load_file(str(storage.download_file(location, Path(tmp) / FILET_FILE)))
