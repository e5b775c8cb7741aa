"""Per-step training metrics to MLflow that never fail, or slow down, training.

The training loop calls :meth:`BufferedMetricLogger.log`, which only appends to a queue. A background
thread sends the points in batches; when the tracking server is down (a restart, a network blip) the points
stay buffered (bounded; the oldest are dropped past ``max_points``) and the thread retries with backoff.
:meth:`close` flushes with a deadline and returns how many points could not be sent; the loop's history
(``history.json``, also inside every checkpoint) holds all of them either way.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("fora")

Point = tuple[str, float, int, int]
"""(key, value, timestamp in ms, step)"""
BATCH = 500  # MLflow's log_batch takes at most 1000 metrics


class BufferedMetricLogger:
    def __init__(self, send: Callable[[Sequence[Point]], None], max_points: int = 100_000,
                 backoff_s: Sequence[float] = (1, 2, 5, 10, 30), flush_timeout_s: float = 60.0) -> None:
        self._send = send
        self._queue: collections.deque[Point] = collections.deque(maxlen=max_points)
        self._backoff = list(backoff_s)
        self._flush_timeout = flush_timeout_s
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.failures = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int, prefix: str = "") -> None:
        """Queue one step's metrics; returns at once."""
        ts = int(time.time() * 1000)
        with self._lock:
            for k, v in metrics.items():
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append((f"{prefix}{k}", float(v), ts, int(step)))
        self._wake.set()

    def _take(self) -> list[Point]:
        with self._lock:
            return [self._queue[i] for i in range(min(BATCH, len(self._queue)))]

    def _run(self) -> None:
        attempt = 0
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            while True:
                batch = self._take()
                if not batch:
                    break
                try:
                    self._send(batch)
                except Exception as err:  # the server is down or refused: keep the points, try again later
                    self.failures += 1
                    if attempt == 0:
                        log.warning("MLflow did not take %d metric points (%s); buffering and retrying, "
                                    "training goes on", len(batch), str(err).splitlines()[0][:160] if str(err)
                                    else type(err).__name__)
                    delay = self._backoff[min(attempt, len(self._backoff) - 1)]
                    attempt += 1
                    if self._closed.wait(timeout=delay):  # closing: close() reports what is left
                        return
                    continue
                if attempt:
                    log.info("MLflow is back: sent the buffered metric points")
                attempt = 0
                with self._lock:
                    for _ in batch:
                        self._queue.popleft()
            if self._closed.is_set():
                return

    def close(self) -> int:
        """Send what is left (within ``flush_timeout_s``); returns the number of points not sent."""
        deadline = time.monotonic() + self._flush_timeout
        while self._queue and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.05)
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 0.1)
        unsent = len(self._queue) + self.dropped
        if unsent:
            log.warning("%d training metric points never reached MLflow; they are in history.json", unsent)
        return unsent


def mlflow_sender(tracking_uri: str, run_id: str) -> Callable[[Sequence[Point]], None]:
    """Send points to one MLflow run with ``log_batch``."""
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)

    def send(points: Sequence[Point]) -> None:
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, ts, step) for k, v, ts, step in points])
    return send
