"""The ablation's two held-out splits: *selection* (the search's validation loss) and *report* (every number
the report quotes), cut from one data prep so they never share a row with each other or with training.

Data prep holds out ``data.max_validation + ablation.report_rows`` rows (``prep_config``); ``split_report``
keeps the first ``data.max_validation`` as ``data/validation.jsonl`` (what the trials score) and moves the rest
to ``report_data/`` (``validation.jsonl`` and ``validation_text.jsonl``, what the scoring reads).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config.errors import DataError
from ..config.run_config import RunConfig
from ..data.jsonl import read_jsonl, write_jsonl
from ..runtime import atomic

SPLIT_FILES = ("validation.jsonl", "validation_text.jsonl")


def prep_config(run: RunConfig) -> RunConfig:
    """The run config data prep runs with: the selection and the report rows held out together."""
    d = run.to_dict()
    d["data"] = {**d["data"], "max_validation": run.data.max_validation + run.ablation.report_rows}
    return RunConfig.from_dict(d)


def split_report(run: RunConfig, data: Path, report: Path) -> dict[str, int]:
    """Cut the held-out rows into selection (``data``) and report (``report``); idempotent. Returns the counts."""
    done = report / "split.json"
    n_select = run.data.max_validation
    rows = {name: read_jsonl(data / name) for name in SPLIT_FILES}
    n = len(rows["validation.jsonl"])
    if done.exists() and n == n_select:
        return json.loads(done.read_text())
    if n <= n_select:
        raise DataError(f"{run.data.source}: {n} held-out rows after filtering, but the ablation needs "
                        f"data.max_validation ({n_select}) for selection plus ablation.report_rows "
                        f"({run.ablation.report_rows}) for the report: lower them or use a larger source")
    report.mkdir(parents=True, exist_ok=True)
    for name, records in rows.items():
        write_jsonl(report / name, records[n_select:])
    counts = {"selection": n_select, "report": n - n_select}
    atomic.write_text(done, json.dumps(counts))
    for name, records in rows.items():  # selection last: a crash before it leaves the split to redo
        write_jsonl(data / name, records[:n_select])
    return counts
