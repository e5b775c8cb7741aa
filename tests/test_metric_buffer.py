"""Training metrics reach MLflow through a buffer; an outage delays them, never loses them (within the
buffer) and never blocks or fails the training loop."""

from __future__ import annotations

import threading
import time

from pipelines.runtime.metric_buffer import BufferedMetricLogger


class FlakyServer:
    """Refuses the first ``down`` calls (a restarting tracking server), then stores what it gets."""

    def __init__(self, down: int = 0, delay: float = 0.0) -> None:
        self.down, self.delay, self.calls = down, delay, 0
        self.got: list[tuple] = []
        self.lock = threading.Lock()

    def __call__(self, points) -> None:
        time.sleep(self.delay)
        with self.lock:
            self.calls += 1
            if self.calls <= self.down:
                raise ConnectionError("HTTPConnectionPool(host='mlflow', port=5000): Connection refused")
            self.got.extend(points)


def test_an_outage_delays_metrics_and_loses_none(caplog):
    server = FlakyServer(down=3)
    buf = BufferedMetricLogger(server, backoff_s=(0.05,), flush_timeout_s=10)
    with caplog.at_level("WARNING", logger="fora"):
        for step in range(1, 21):
            buf.log({"loss": 1.0 / step, "lr": 0.1}, step, prefix="train/")
        assert buf.close() == 0
    assert buf.failures == 3
    assert [(k, s) for k, _, _, s in server.got] == [(f"train/{k}", s) for s in range(1, 21) for k in ("loss", "lr")]
    assert [v for k, v, _, _ in server.got if k == "train/loss"] == [1.0 / s for s in range(1, 21)]
    assert caplog.text.count("buffering and retrying") == 1  # one warning per outage, not one per retry


def test_logging_never_waits_for_a_slow_or_dead_server():
    slow = BufferedMetricLogger(FlakyServer(delay=2.0), flush_timeout_s=0.2)
    dead = BufferedMetricLogger(FlakyServer(down=10**9), backoff_s=(0.05,), flush_timeout_s=0.2)
    t0 = time.perf_counter()
    for step in range(200):
        slow.log({"loss": 1.0}, step)
        dead.log({"loss": 1.0}, step)
    assert time.perf_counter() - t0 < 0.5
    assert dead.close() == 200  # reported, not raised: history.json keeps them
    slow.close()


def test_a_full_buffer_drops_the_oldest_points_and_counts_them():
    server = FlakyServer(down=10**9)
    buf = BufferedMetricLogger(server, max_points=5, backoff_s=(0.05,), flush_timeout_s=0.1)
    for step in range(8):
        buf.log({"loss": float(step)}, step)
    assert buf.dropped == 3
    assert [p[3] for p in buf._queue] == [3, 4, 5, 6, 7]
    assert buf.close() == 8
