"""SIGTERM (Kubernetes deleting a pod, ``kill``) and Ctrl-C during a command end in one line and a
conventional exit code, never a stack dump:

    fora: interrupted at step 37 of 100 (last checkpoint: step 25); rerun the same command to resume

Exit code 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process killed by
it. The training loop and its driver note where they are (:func:`progress`); checkpoints hold everything a
resume needs (``training/checkpoint_state.py``), so nothing is lost but the steps since the last one.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ..config.errors import one_line_user_errors

_progress: dict[str, Any] = {}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM. A KeyboardInterrupt: no ``except Exception`` on the way swallows
    it, and Ray's blocking calls (``ray.get`` polls for signals) turn exactly that into their own interrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def progress(**fields: Any) -> None:
    """Note where this process's work is (``step``, ``max_steps``, ``checkpoints``: the namespace)."""
    _progress.update(fields)


def reset() -> None:
    installed_ = _progress.get("_installed")
    _progress.clear()
    if installed_:
        _progress["_installed"] = True


def _raise(signum: int, frame) -> None:
    _progress["signum"] = signum  # Ray re-raises a plain KeyboardInterrupt: the signal is remembered here
    raise Interrupted(signum)


def signal_number(err: BaseException) -> int:
    """The signal behind an interrupt: SIGTERM when our handler saw one, else SIGINT (Ctrl-C)."""
    return getattr(err, "signum", None) or _progress.get("signum") or signal.SIGINT


def install() -> None:
    """SIGTERM raises :class:`Interrupted` in the main thread (Ctrl-C already raises KeyboardInterrupt).
    Raises ValueError outside the main thread (where Python allows no handler)."""
    signal.signal(signal.SIGTERM, _raise)
    _progress["_installed"] = True


def installed() -> bool:
    """Whether this command asked for :func:`install` (a library caller's process is left alone); ray.init
    replaces the handler with its own, so ``ray_runtime`` puts it back when this says so."""
    return bool(_progress.get("_installed"))


def _last_checkpoint() -> int | None:
    where = _progress.get("checkpoints")
    if not where:
        return None
    try:
        from .checkpoints import latest

        found = latest(where)
    except Exception:  # noqa: BLE001 (storage may be what failed; the line is still printed)
        return None
    return int(found["step"]) if found else None


def describe(signum: int) -> tuple[str, int]:
    """(the one line, the exit code) for an interruption by ``signum``."""
    code = 128 + signum
    if "max_steps" not in _progress:
        return f"interrupted ({signal.Signals(signum).name}); rerun the same command to continue", code
    step = _progress.get("step")
    ckpt = _last_checkpoint()
    at = f"at step {step} of {_progress['max_steps']}" if step is not None else "during training"
    kept = f" (last checkpoint: step {ckpt})" if ckpt else " (no checkpoint yet)"
    return f"interrupted {at}{kept}; rerun the same command to resume", code


def stop_ray_quietly() -> None:
    """Shut down a Ray this process started, so its workers do not outlive it (errors ignored)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None:
        return
    try:
        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001
        pass


@contextlib.contextmanager
def one_line_command(prog: str = "fora") -> Iterator[None]:
    """A command's (or a KFP component's) whole run: user errors in one line (exit 2, ``one_line_user_errors``)
    and SIGTERM / Ctrl-C in one line with exit 128 + the signal; the previous SIGTERM handler is put back
    after."""
    reset()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        install()
    except ValueError:  # not the main thread (a test calling a component in-process): signals stay as they are
        previous = None
    try:
        with one_line_user_errors(prog):
            yield
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Interrupted)
        line, code = describe(signal_number(err))
        print(f"\n{prog}: {line}", file=sys.stderr, flush=True)
        stop_ray_quietly()
        raise SystemExit(code) from None
    finally:
        _progress.pop("_installed", None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
