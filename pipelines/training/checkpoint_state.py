"""A training checkpoint, written and read back: the PEFT adapter (safetensors), the optimizer and scheduler states
(tensors only), every worker's random-number state, the loss history and the run's fingerprint.

Loaded with ``weights_only=True``: a checkpoint comes from shared storage, and a pickle there would run whatever
code whoever can write the bucket put in it.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fora_core import restore_training_state, save_adapter

from ..runtime import checkpoints, rng_state
from .checkpoint_choice import BEST_ADAPTER_DIR, CHOICE_FILE
from .loop_config import LoopConfig
from .outputs import ADAPTER_DIR

logger = logging.getLogger("fora")

STATE_FILE = "trainer_state.pt"


@dataclass
class Resumed:
    """Where the loop starts: step 0 with no history, or a checkpoint's step, history and location."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    path: str | None = None


def load_trainer_state(resume: str | Path, expected_fingerprint: str | None) -> dict | None:
    """The optimizer/scheduler state of a checkpoint, or None when it belongs to another run."""
    meta_file = Path(resume) / checkpoints.META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if expected_fingerprint and meta.get("fingerprint") != expected_fingerprint:
        logger.warning("checkpoint %s belongs to another run (fingerprint %s, this run %s): starting fresh",
                       resume, meta.get("fingerprint"), expected_fingerprint)
        return None
    try:
        return torch.load(Path(resume) / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"refusing to load {Path(resume) / STATE_FILE}: it is not a plain tensor checkpoint "
                           f"({str(err).splitlines()[0][:160]})") from None


def save_checkpoint(path: Path, model, loop: LoopConfig, optimizer, scheduler, step: int,
                    history: list[dict], rng: list[dict] | None = None, choice: dict | None = None,
                    best_adapter: Path | None = None) -> None:
    """Adapter (safetensors), optimizer + scheduler state and every worker's random-number state (tensors,
    numbers and tuples only), history, the run's fingerprint, and the worker group that trained it (its size and
    collective backend: what ``train.backend`` resolved to). ``choice``: the checkpoint choice so far
    (``checkpoint_choice.py``; its ``stopped_early`` marks the run finished); ``best_adapter``: the best
    evaluation point's adapter folder, copied in when it exists."""
    import torch.distributed as dist

    grouped = dist.is_available() and dist.is_initialized()
    save_adapter(model, path / ADAPTER_DIR, loop.run.fora, layers=loop.layers)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "history": history, "rng": rng or []}, path / STATE_FILE)
    (path / "history.json").write_text(json.dumps(history))
    if choice is not None:
        (path / CHOICE_FILE).write_text(json.dumps(choice, indent=2))
    if best_adapter is not None and best_adapter.is_dir():
        shutil.copytree(best_adapter, path / BEST_ADAPTER_DIR)
    meta = checkpoints.meta(loop.fingerprint or "", step, loop.run.train.max_steps, loop.run_key or "")
    meta.update(workers=dist.get_world_size() if grouped else 1,
                collective_backend=dist.get_backend() if grouped else None,
                stopped_early=bool(choice and choice["stopped_early"]))
    (path / checkpoints.META_FILE).write_text(json.dumps(meta))


def resume(location: str | None, loop: LoopConfig, model, optimizer, scheduler, rank: int, world: int) -> Resumed:
    """Restore the adapter, optimizer, scheduler and this worker's generators from the checkpoint at ``location``
    (a local folder), when it belongs to this run; else a fresh start."""
    state = load_trainer_state(location, loop.fingerprint) if location else None
    if state is None:
        return Resumed()
    restore_training_state(model, Path(location) / ADAPTER_DIR, loop.run.fora)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    saved_rng = state.get("rng") or []  # checkpoints before 2026-12 carry none
    if len(saved_rng) == world:
        rng_state.restore(saved_rng[rank])
    elif saved_rng and rank == 0:
        logger.warning("checkpoint of %d workers resumed on %d: the data order is the same, the dropout masks "
                       "are drawn afresh", len(saved_rng), world)
    return Resumed(step=state["step"], history=state.get("history", []), path=str(location))
