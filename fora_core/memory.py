"""Peak-memory measurement for a block of work, on CUDA (allocator peak) or CPU (sampled process RSS)."""

from __future__ import annotations

import os
import threading

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


class PeakMemory:
    """Context manager recording peak memory while it is open.

    On CUDA: ``torch.cuda.max_memory_allocated`` (kind 'cuda-allocated'). On CPU: the process RSS sampled
    every ``interval`` seconds by a daemon thread (kind 'cpu-rss'), so short spikes may be missed.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self.kind = "cuda-allocated" if self.device.type == "cuda" else "cpu-rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = current_rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())


class SavedActivations:
    """Context manager counting the bytes autograd keeps for the backward pass while it is open: every tensor
    saved by an operation (``torch.autograd.graph.saved_tensors_hooks``), each storage once, parameters and
    buffers of ``model`` excluded (they are held anyway). ``bytes`` after the block. A second route to what
    the memory plan's activation formula predicts."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        held = list(model.parameters()) + list(model.buffers()) if model is not None else []
        self._held = {t.untyped_storage().data_ptr() for t in held}
        self._seen: dict[int, int] = {}
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self._held and ptr not in self._seen:
                self._seen[ptr] = storage.nbytes()
        return t

    def __enter__(self) -> SavedActivations:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        self.bytes = sum(self._seen.values())


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute every decoder layer in the backward pass (non-reentrant ``torch.utils.checkpoint``: it needs no
    input that requires grad, which a frozen embedding never gives) and drop the KV cache training never reads."""
    model.config.use_cache = False
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
