"""What a training run says while it runs: a tqdm bar (``progress``) or a line every tenth of the run on rank 0,
where each Ray worker runs, and the step metrics to MLflow (rank 0, buffered: an MLflow outage never stops
training)."""

from __future__ import annotations

from .checkpoint_state import Resumed
from .contexts import Context, metric_logger
from .loop_config import LoopConfig


def say_line(text: str) -> None:
    """A progress line on stdout (a Ray worker's stdout reaches the driver's log and the Ray job's log)."""
    print(f"[fora] {text}", flush=True)


class Progress:
    """Opened around the loop; ``step(metrics)`` after each step, ``say(text)`` for one line from rank 0."""

    def __init__(self, loop: LoopConfig, ctx: Context, start: Resumed) -> None:
        self.loop, self.ctx, self.start = loop, ctx, start
        self.max_steps = loop.run.train.max_steps
        self.every = max(1, self.max_steps // 10)
        self.bar = None
        self.metrics_log = None

    def __enter__(self) -> Progress:
        self.metrics_log = metric_logger(self.loop, self.ctx.rank)
        if self.loop.progress and self.ctx.rank == 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.max_steps, initial=self.start.step, desc=f"training ({self.loop.run.fora.method})",
                            unit="step")
        if self.loop.where in ("ray", "tune"):
            import ray  # [ray]

            # every worker says where it runs (the data-parallel layout, in the job's log)
            say_line(f"training worker {self.ctx.rank}/{self.ctx.world} on Ray node "
                     f"{ray.get_runtime_context().get_node_id()}")
        if self.start.step:
            self.say(f"resumed at step {self.start.step} of {self.max_steps} from {self.start.path}")
        return self

    def say(self, text: str) -> None:
        if self.ctx.rank == 0 and self.bar is None:
            say_line(text)

    def step(self, metrics: dict) -> None:
        done = metrics["step"]
        if self.metrics_log is not None:
            self.metrics_log.log({k: v for k, v in metrics.items() if k not in ("step", "step_started")}, done,
                                 prefix="train/")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        elif done % self.every == 0 or done == self.max_steps:
            self.say(f"step {done}/{self.max_steps} loss {metrics['loss']:.4f}"
                     + (f" val_loss {metrics['val_loss']:.4f}" if "val_loss" in metrics else "")
                     + f" {metrics['tokens_per_s']:.0f} tokens/s")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics_log is not None:
            self.metrics_log.close()
