"""Wall seconds per stage of one ablation, summed over its invocations (a resumed run keeps counting)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path


class StageClock:
    """Wall seconds per stage, summed over every invocation of one ablation (a resumed run keeps counting) and
    saved to ``path`` after each stage: ``with clock("search"): ...``; ``clock.totals()`` adds "total" and
    "invocations"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
        self.seconds["invocations"] = self.seconds.get("invocations", 0) + 1
        self._save()

    def _save(self) -> None:
        self.path.write_text(json.dumps(self.seconds, indent=1))

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t
            self._save()

    def totals(self) -> dict[str, float]:
        stages = {k: v for k, v in self.seconds.items() if k not in ("invocations", "total")}
        return {**stages, "total": sum(stages.values()), "invocations": self.seconds["invocations"]}
