"""How much memory the accelerator a step asks for has: the memory plan's capacity (``fora validate``).

A step's GPU type is named the way Kubernetes schedules it, by a node label in ``resources.<step>.node_selector``
(NVIDIA GPU feature discovery's ``nvidia.com/gpu.product``, GKE's ``cloud.google.com/gke-accelerator``, Karpenter's
``karpenter.k8s.aws/instance-gpu-name``), or given outright as ``resources.<step>.gpu_memory``. A CPU step's
capacity is its pod's memory limit (``resources.<step>.memory``).
"""

from __future__ import annotations

import re

from .resources import StepResources

GIB = 1024 ** 3
GPU_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator", "karpenter.k8s.aws/instance-gpu-name",
              "accelerator")
# memory per GPU (GiB, as the vendor sells it: an "80GB" H100 is 80 GiB-class; the plan keeps 10% headroom)
GPU_MEMORY_GIB: list[tuple[str, float]] = [
    ("h200", 141), ("h100-nvl", 94), ("gh200", 96), ("h100", 80), ("h800", 80), ("b200", 180), ("b100", 180),
    ("mi300x", 192), ("mi250", 128), ("a100", 40), ("a800", 80), ("l40s", 48), ("l40", 48), ("l4", 24),
    ("a10g", 24), ("a10", 24), ("a6000", 48), ("rtx-6000-ada", 48), ("a40", 48), ("v100", 16), ("t4", 16),
    ("4090", 24), ("3090", 24),
]
"""Matched as substrings of the lower-cased label value, first match wins (specific names before families),
when the label does not carry its size (``NVIDIA-A100-SXM4-80GB`` and ``nvidia-a100-80gb`` do: 80 GiB)."""
UNITS = {"": 1, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
         "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}


def quantity_bytes(quantity: str) -> float:
    """A Kubernetes memory quantity ('32G', '80Gi', '512Mi') in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", quantity.strip())
    if not m:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return float(m.group(1)) * UNITS[m.group(2) or ""]


def gpu_product(res: StepResources) -> str | None:
    """The GPU product the node selector names, or None."""
    for label in GPU_LABELS:
        if res.node_selector.get(label):
            return res.node_selector[label]
    return None


def gpu_memory_bytes(product: str) -> float | None:
    """Memory of one GPU of a product label value (``NVIDIA-H100-80GB-HBM3``, ``nvidia-l4``), or None."""
    name = product.lower().replace("_", "-").replace(" ", "-")
    sized = re.search(r"(?<![0-9])(\d{2,3})gb", name)
    if sized:
        return int(sized.group(1)) * GIB
    for key, gib in GPU_MEMORY_GIB:
        if key in name:
            return gib * GIB
    return None


def capacity(res: StepResources, gpu: bool) -> tuple[float | None, str]:
    """(bytes one worker of this step can use, where that figure comes from); None when no figure is known."""
    if not gpu:
        return quantity_bytes(res.memory), f"the pod's memory limit ({res.memory})"
    if res.gpu_memory:
        return quantity_bytes(res.gpu_memory), f"gpu_memory {res.gpu_memory}"
    product = gpu_product(res)
    if product is None:
        return None, "no GPU product label in node_selector and no gpu_memory"
    found = gpu_memory_bytes(product)
    if found is None:
        return None, f"GPU product {product!r} is not in fora's table (set gpu_memory)"
    return found, f"{product}, {found / GIB:.0f} GiB"
