"""Per-step Kubernetes resources of the compiled pipelines: CPUs, memory, GPUs and their type, node
selector, tolerations, timeout and retries, for each of the five steps and the sweep.

They live in the run config's ``resources`` section (the same validated schema as everything else) and are
baked into the pipeline spec when it is compiled (``fora compile --config X``; ``fora submit CONFIG``
compiles with CONFIG's), because Kubernetes needs them before a pod starts::

    resources:
      calibrate: {cpu: 8, memory: 64G, gpus: 1, node_selector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3},
                  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]}
      train:     {gpus: 1, timeout_s: 172800}

A section names only what it changes; the rest keeps the step's default (today's small-model sizes, below).
A step given GPUs runs its model work on them (``cuda``) and fails in one line when the pod sees none.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from fora_core.field_types import check_field_types, printable_key

from .checks import fail
from .errors import RunConfigError

STEPS = ("data_prep", "calibrate", "train", "evaluate", "register", "sweep")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
CPU_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
MEMORY_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")


@dataclass
class StepResources:
    """What one step's pod asks Kubernetes for. Requests equal limits (a Guaranteed pod)."""

    cpu: str = "2"
    """CPU cores: '4', '0.5' or '500m'."""
    memory: str = "8G"
    """Memory: '16G', '16Gi', '512Mi'."""
    gpus: int = 0
    """Accelerators to request (0: none); the step then runs its model on them."""
    accelerator: str = "nvidia.com/gpu"
    """The extended resource the GPUs are (nvidia.com/gpu, amd.com/gpu, ...)."""
    node_selector: dict = field(default_factory=dict)
    """Node labels the pod must land on, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}."""
    tolerations: list = field(default_factory=list)
    """Taints the pod tolerates: [{key, operator: Equal|Exists, value, effect, toleration_seconds}]."""
    timeout_s: int = 0
    """Kill the pod after this many seconds (activeDeadlineSeconds; 0: no limit)."""
    retries: int = 0
    """KFP retries of the step (train and sweep resume from their checkpoints)."""
    shm: str = ""
    """A memory-backed /dev/shm of this size (Ray's object store), e.g. '8Gi'; '' for none."""
    gpu_memory: str = ""
    """Memory of one of its GPUs, e.g. '80Gi', for the memory plan; '' = from the node_selector's GPU product
    label (nvidia.com/gpu.product, cloud.google.com/gke-accelerator, ...; ``config/accelerators.py``)."""

    def check(self, prefix: str) -> None:
        if isinstance(self.cpu, (int, float)) and not isinstance(self.cpu, bool):
            self.cpu = str(self.cpu)
        if not isinstance(self.cpu, str) or not CPU_QUANTITY.match(self.cpu) or float(self.cpu.rstrip("m") or 0) <= 0:
            fail(f"{prefix}.cpu", self.cpu, "a positive number of cores such as 4, 0.5 or '500m'")
        if not isinstance(self.memory, str) or not MEMORY_QUANTITY.match(self.memory):
            fail(f"{prefix}.memory", self.memory, "a Kubernetes quantity such as 16G, 16Gi or 512Mi")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            fail(f"{prefix}.gpus", self.gpus, "an integer >= 0")
        if not isinstance(self.accelerator, str) or "/" not in self.accelerator:
            fail(f"{prefix}.accelerator", self.accelerator, "an extended resource name such as nvidia.com/gpu")
        if not isinstance(self.node_selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()):
            fail(f"{prefix}.node_selector", self.node_selector, "a mapping of label names to string values")
        if not isinstance(self.tolerations, list):
            fail(f"{prefix}.tolerations", self.tolerations, "a list of {key, operator, value, effect}")
        for i, tol in enumerate(self.tolerations):
            where = f"{prefix}.tolerations[{i}]"
            if not isinstance(tol, dict) or not set(tol) <= TOLERATION_KEYS:
                fail(where, tol, "a mapping with keys " + ", ".join(sorted(TOLERATION_KEYS)))
            _check_toleration(where, tol)
        for name in ("timeout_s", "retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"{prefix}.{name}", value, "an integer >= 0")
        if not isinstance(self.shm, str) or (self.shm and not MEMORY_QUANTITY.match(self.shm)):
            fail(f"{prefix}.shm", self.shm, "'' or a Kubernetes quantity such as 8Gi")
        if not isinstance(self.gpu_memory, str) or (self.gpu_memory and not MEMORY_QUANTITY.match(self.gpu_memory)):
            fail(f"{prefix}.gpu_memory", self.gpu_memory, "'' (from the GPU product label) or a quantity such as 80Gi")


def _check_toleration(where: str, tol: dict) -> None:
    """What the Kubernetes API server would reject in a toleration, named before anything is compiled."""
    operator = tol.get("operator", "Equal")
    if operator not in ("Equal", "Exists"):
        fail(f"{where}.operator", operator, "Equal, Exists")
    for key in ("key", "value"):
        if key in tol and not isinstance(tol[key], str):
            fail(f"{where}.{key}", tol[key], "a string (quote it)")
    if operator == "Exists" and tol.get("value"):
        fail(f"{where}.value", tol["value"], "nothing: with operator Exists the toleration matches any value "
                                             "(drop value, or use operator Equal)")
    if operator == "Equal" and not tol.get("key"):
        fail(f"{where}.key", tol.get("key", ""), "a taint key (only operator Exists may leave it empty)")
    if "effect" in tol and tol["effect"] not in TOLERATION_EFFECTS:
        fail(f"{where}.effect", tol["effect"], ", ".join(TOLERATION_EFFECTS))
    if "toleration_seconds" in tol:
        seconds = tol["toleration_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            fail(f"{where}.toleration_seconds", seconds, "an integer number of seconds >= 0")
        if tol.get("effect") != "NoExecute":
            fail(f"{where}.toleration_seconds", seconds, "only with effect: NoExecute (Kubernetes ignores it "
                                                         "otherwise)")


DEFAULTS: dict[str, dict[str, Any]] = {
    "data_prep": {"cpu": "2", "memory": "8G", "timeout_s": 3600},
    "calibrate": {"cpu": "4", "memory": "16G", "timeout_s": 2 * 3600},
    "train": {"cpu": "8", "memory": "32G", "timeout_s": 24 * 3600, "retries": 2, "shm": "8Gi"},
    "evaluate": {"cpu": "4", "memory": "16G", "timeout_s": 6 * 3600},
    "register": {"cpu": "2", "memory": "16G", "timeout_s": 2 * 3600},
    "sweep": {"cpu": "16", "memory": "64G", "timeout_s": 48 * 3600, "retries": 1, "shm": "16Gi"},
}


def _step(name: str, value: Any) -> StepResources:
    if isinstance(value, StepResources):
        value.check(f"resources.{name}")
        return value
    if not isinstance(value, dict):
        raise RunConfigError(f"'resources.{name}' must be a mapping")
    known = {f.name for f in dataclasses.fields(StepResources)}
    unknown = sorted(printable_key(k) for k in value if k not in known)
    if unknown:
        raise RunConfigError(f"unknown field 'resources.{name}.{unknown[0]}' (allowed: {', '.join(sorted(known))})")
    check_field_types(StepResources, value, f"resources.{name}.", RunConfigError, lenient=("cpu",))
    step = StepResources(**{**DEFAULTS[name], **value})
    step.check(f"resources.{name}")
    return step


@dataclass
class ResourcesConfig:
    """Resources of each step's pod (see the module docstring); unset fields keep the step's default."""

    data_prep: Any = field(default_factory=dict)
    calibrate: Any = field(default_factory=dict)
    train: Any = field(default_factory=dict)
    evaluate: Any = field(default_factory=dict)
    register: Any = field(default_factory=dict)
    sweep: Any = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in STEPS:
            setattr(self, name, _step(name, getattr(self, name)))

    def of(self, step: str) -> StepResources:
        return getattr(self, step)


def apply_to_task(task, res: StepResources):
    """Set a KFP task's requests = limits, GPUs, node selector, tolerations, timeout, retries and /dev/shm."""
    from kfp import kubernetes

    task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu)
    task.set_memory_request(res.memory).set_memory_limit(res.memory)
    if res.gpus:
        task.set_accelerator_type(res.accelerator).set_accelerator_limit(res.gpus)
    for label, value in sorted(res.node_selector.items()):
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for tol in res.tolerations:
        kubernetes.add_toleration(task, key=tol.get("key"), operator=tol.get("operator", "Equal"),
                                  value=tol.get("value"), effect=tol.get("effect"),
                                  toleration_seconds=tol.get("toleration_seconds"))
    if res.timeout_s:
        kubernetes.set_timeout(task, res.timeout_s)
    if res.retries:
        task.set_retry(num_retries=res.retries, backoff_duration="60s", backoff_factor=2)
    if res.shm:
        kubernetes.empty_dir_mount(task, "shm", "/dev/shm", medium="Memory", size_limit=res.shm)
    return task


def step_device(res: StepResources, step: str) -> str:
    """'cuda' for a step given GPUs (one-line error if the pod sees none), else 'cpu'."""
    if not res.gpus:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RunConfigError(f"'resources.{step}.gpus' is {res.gpus} but this pod sees no GPU "
                              "(check the node's drivers and the accelerator type, or set it to 0)")
    return "cuda"
