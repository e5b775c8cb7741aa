"""The memory plan of a run: printed by ``fora validate`` and ``fora compile``, enforced before any work.

``fora_core.memory_plan`` turns the model's config into peak bytes per training worker; this module reads the
run config (dtype, quantization, K, batch, length, checkpointing, workers) and the capacity of what
``resources.train`` asks for (``config/accelerators.py``), and refuses, in one line, a run that cannot fit:

* a GPU run (``train.use_gpu`` with ``resources.train.gpus``): the plan's peak over 90% of one GPU's memory;
* a CPU run in a pipeline pod: the peak over 75% of the pod's memory limit (on CPU the allocator keeps freed
  pages: the resident peak of training steps measured 1.0-1.3x the plan, ``tests/test_memory_plan.py``).

On a laptop (``fora run``) the pod limit does not apply: a CPU plan over it is said, not refused.
"""

from __future__ import annotations

from fora_core.memory_plan import GIB, MemoryPlan, plan_memory

from ..config.accelerators import capacity
from ..config.errors import RunConfigError
from ..config.run_config import RunConfig

GPU_HEADROOM = 0.9
CPU_HEADROOM = 0.75


def plan_for(run: RunConfig, model_cfg) -> MemoryPlan:
    tcfg, res = run.train, run.resources.train
    gpu = tcfg.use_gpu and res.gpus > 0
    return plan_memory(model_cfg, run.fora, dtype=run.dtype, quantization=run.quantization,
                       batch_size=tcfg.batch_size, seq_len=run.data.max_length,
                       checkpointing=tcfg.gradient_checkpointing, workers=tcfg.num_workers, gpu=gpu)


def check_memory(run: RunConfig, model_cfg, enforce_pod_memory: bool = True) -> dict:
    """{"plan", "capacity", "source", "fits"}; raises RunConfigError when the plan cannot fit."""
    plan = plan_for(run, model_cfg)
    gpu = run.train.use_gpu and run.resources.train.gpus > 0
    cap, source = capacity(run.resources.train, gpu)
    headroom = GPU_HEADROOM if gpu else CPU_HEADROOM
    fits = None if cap is None else plan.total <= headroom * cap
    if fits is False and (gpu or enforce_pod_memory):
        raise RunConfigError(refusal(run, plan, cap, source, headroom))
    return {"plan": plan, "capacity": cap, "source": source, "fits": fits, "gpu": gpu}


def refusal(run: RunConfig, plan: MemoryPlan, cap: float, source: str, headroom: float) -> str:
    hints = []
    if not run.train.gradient_checkpointing and plan.activations_checkpointed < plan.activations:
        hints.append(f"train.gradient_checkpointing: true ({plan.activations_checkpointed / GIB:.1f} GiB of "
                     f"activations instead of {plan.activations / GIB:.1f})")
    if run.train.batch_size > 1:
        hints.append("a smaller train.batch_size with train.grad_accum (the same global batch)")
    if run.quantization == "none" and plan.weights > 0.3 * cap:
        hints.append("quantization: nf4 (QFoRA)")
    return (f"the run does not fit: the memory plan's peak per training worker is {plan.total / GIB:.1f} GiB, over "
            f"{headroom:.0%} of resources.train's {cap / GIB:.1f} GiB ({source})"
            + (f"; try {'; or '.join(hints)}" if hints else "; give resources.train a larger accelerator"))


def describe(result: dict) -> str:
    """The plan as a table with its verdict (for ``fora validate`` and ``fora compile``)."""
    plan, cap = result["plan"], result["capacity"]
    head = "memory plan, one training worker (estimate; fora_core/memory_plan.py):"
    if cap is None:
        verdict = f"  capacity unknown: {result['source']}"
    else:
        headroom = GPU_HEADROOM if result["gpu"] else CPU_HEADROOM
        verdict = (f"  fits {result['source']}: {plan.total / GIB:.1f} of {cap / GIB:.1f} GiB "
                   f"(limit {headroom:.0%})" if result["fits"] else
                   f"  over {headroom:.0%} of {result['source']} ({cap / GIB:.1f} GiB): not enforced here")
    return "\n".join([head, *plan.lines(), verdict])

