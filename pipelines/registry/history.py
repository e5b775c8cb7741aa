"""The append-only promotion history of a registered model.

MLflow keeps only where an alias points now. Every decision (automatic or by hand) is appended as a
registered-model tag ``promotion.<seq>`` (6 digits) holding one JSON object; entries are only ever added,
under the registry lock (``lock.py``), so the sequence has no gaps or duplicates:

    {"seq": 3, "time": "2026-12-02T15:04:05Z", "action": "promote" | "keep" | "propose" | "manual" |
     "rollback", "alias": "champion", "version": 7, "previous": 5, "reason": "...", "by": "pipeline run ...",
     "test": {...paired test...}, "suite": "<eval suite fingerprint>", "data_fingerprint": "..."}
"""

from __future__ import annotations

import json
import time

from mlflow.tracking import MlflowClient

PREFIX = "promotion."


def read_history(client: MlflowClient, model_name: str) -> list[dict]:
    """Every entry, oldest first."""
    tags = client.get_registered_model(model_name).tags
    entries = [json.loads(v) for k, v in tags.items() if k.startswith(PREFIX)]
    return sorted(entries, key=lambda e: e["seq"])


def append_entry(client: MlflowClient, model_name: str, entry: dict) -> dict:
    """Append ``entry`` (seq and time added); call under the registry lock."""
    seqs = [int(k[len(PREFIX):]) for k in client.get_registered_model(model_name).tags if k.startswith(PREFIX)]
    seq = max(seqs, default=0) + 1
    full = {"seq": seq, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry}
    client.set_registered_model_tag(model_name, f"{PREFIX}{seq:06d}", json.dumps(full, default=str))
    return full


def history_table(entries: list[dict]) -> str:
    """The history as a markdown table (``fora registry history``)."""
    lines = ["| # | time (UTC) | action | alias | version | previous | by | reason |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['seq']} | {e['time']} | {e['action']} | {e.get('alias', '')} | {e.get('version', '')} | "
                     f"{e.get('previous') or '-'} | {e.get('by', '')} | {e.get('reason', '')} |")
    return "\n".join(lines) + "\n"
