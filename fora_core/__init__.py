"""fora_core: FoRA (Fisher-orthogonal Rank Adaptation) on top of Hugging Face PEFT.

1. ``fisher_scores`` scores every decoder layer by its diagonal empirical Fisher; ``select_layers`` keeps
   the top K.
2. ``apply_fora`` puts standard PEFT LoRA adapters at those layers, B column-orthonormal and A = 0.
3. ``create_fora_optimizer`` trains B with ``CayleyAdam`` on the Stiefel manifold and A with AdamW.

Other methods behind ``ForaConfig.method`` (``methods.py``): FILet init (``filet.py``), Fourier-FoRA
(``fourier.py``), and PEFT's DoRA, rsLoRA, PiSSA and LoRA+, each with or without Fisher layer selection.

This package imports only torch, transformers and peft (never kfp, ray or mlflow).
"""

from . import quiet_logs  # noqa: F401, I001  (first: before peft imports bitsandbytes)
from .adapters import apply_fora, count_trainable, lora_factors
from .architecture import find_decoder_layers, resolve_target_modules
from .batching import make_batches
from .cayley_adam import CayleyAdam, orthogonality_error, qr_retraction
from .config import (
    FisherSettings,
    ForaConfig,
    ForaConfigError,
    FourierSettings,
    LoraPlusSettings,
    StiefelSettings,
)
from .diagnostics import (
    adapter_diagnostics,
    entropy_effective_rank,
    max_orthogonality_error,
    text_drift,
    update_singular_values,
)
from .filet import KfacCollector, filet_factors, fisher_energies
from .fisher import FisherReport, fisher_scores
from .methods import FILET_METHODS, FISHER_METHODS, METHOD_SPECS, METHODS, STIEFEL_METHODS, MethodSpec
from .model_source import BUILTIN_MODELS, ModelLoadError, ModelSource
from .optimizers import ForaOptimizer, create_fora_optimizer
from .persistence import load_adapter, merge_adapter, restore_training_state, save_adapter
from .selection import select_layers

__all__ = [
    "BUILTIN_MODELS",
    "FILET_METHODS",
    "FISHER_METHODS",
    "METHODS",
    "METHOD_SPECS",
    "STIEFEL_METHODS",
    "FourierSettings",
    "KfacCollector",
    "LoraPlusSettings",
    "MethodSpec",
    "filet_factors",
    "fisher_energies",
    "restore_training_state",
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
