"""fora_core: FoRA (Fisher-orthogonal Rank Adaptation) on top of Hugging Face PEFT.

1. ``fisher_scores`` scores every decoder layer by its diagonal empirical Fisher; ``select_layers`` keeps
   the top K.
2. ``apply_fora`` puts standard PEFT LoRA adapters at those layers, B column-orthonormal and A = 0.
3. ``create_fora_optimizer`` trains B with ``CayleyAdam`` on the Stiefel manifold and A with AdamW.

This package imports only torch, transformers and peft (never kfp, ray or mlflow).
"""

from .adapters import apply_fora, count_trainable, lora_factors
from .architecture import find_decoder_layers, resolve_target_modules
from .batching import make_batches
from .cayley_adam import CayleyAdam, orthogonality_error, qr_retraction
from .config import FisherSettings, ForaConfig, ForaConfigError, StiefelSettings
from .diagnostics import (
    adapter_diagnostics,
    entropy_effective_rank,
    kl_drift,
    max_orthogonality_error,
    text_drift,
    update_singular_values,
)
from .fisher import FisherReport, fisher_scores
from .model_source import BUILTIN_MODELS, ModelLoadError, ModelSource
from .optimizers import ForaOptimizer, create_fora_optimizer
from .persistence import load_adapter, merge_adapter, save_adapter
from .selection import select_layers

__all__ = [
    "BUILTIN_MODELS",
    "CayleyAdam",
    "FisherReport",
    "FisherSettings",
    "ForaConfig",
    "ForaConfigError",
    "ForaOptimizer",
    "ModelLoadError",
    "ModelSource",
    "StiefelSettings",
    "adapter_diagnostics",
    "apply_fora",
    "count_trainable",
    "create_fora_optimizer",
    "entropy_effective_rank",
    "find_decoder_layers",
    "fisher_scores",
    "kl_drift",
    "load_adapter",
    "lora_factors",
    "make_batches",
    "max_orthogonality_error",
    "merge_adapter",
    "orthogonality_error",
    "qr_retraction",
    "resolve_target_modules",
    "save_adapter",
    "select_layers",
    "text_drift",
    "update_singular_values",
]
