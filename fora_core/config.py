"""FoRA configuration: one validated schema for the method.

Every field is checked at construction; a wrong value raises :class:`ForaConfigError` whose message
names the field and what is allowed, so a user never sees a raw traceback for a typo.

    >>> ForaConfig(method="fora", rank=32, layer_budget=0.5)      # K = half the layers
    >>> ForaConfig.from_dict({"method": "lora"})                    # all layers, plain LoRA
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .field_types import check_field_types, describe_value, printable_key, section_hint
from .methods import METHOD_SPECS, METHODS, MethodSpec

__all__ = ["METHODS", "FisherSettings", "ForaConfig", "ForaConfigError", "FourierSettings", "LoraPlusSettings",
           "StiefelSettings", "resolve_layer_budget"]

FISHER_ESTIMATORS = ("empirical", "true")
CAYLEY_SOLVERS = ("fixed-point", "exact")
STIEFEL_FACTORS = ("B", "A")
DEFAULT_TARGETS = ("q", "k", "v", "up", "down")


class ForaConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values."""


def _fail(field_name: str, value: Any, allowed: str) -> None:
    raise ForaConfigError(f"invalid value for '{field_name}': {describe_value(value)} (allowed: {allowed})")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, value, f"an integer >= {minimum}")


def _check_float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        _fail(name, value, f"a finite number in {bracket}{lo}, {hi}]" if hi == float("inf") and not lo_open
              else f"a finite number > {lo}" if hi == float("inf") else f"a number in {bracket}{lo}, {hi}]")


def _from_mapping(cls: type, data: dict[str, Any], prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(printable_key(k) for k in data if k not in names)
    if unknown:
        raise ForaConfigError(
            f"unknown field '{prefix}{unknown[0]}' (allowed: {', '.join(sorted(names))})"
        )
    check_field_types(cls, data, prefix, ForaConfigError, lenient=("target_modules",))
    return cls(**data)


@dataclass
class FisherSettings:
    """How the per-layer Fisher score F_l is estimated (GUIDE section 1, Eq. 2)."""

    num_batches: int = 128
    """N: number of calibration mini-batches averaged in F_l."""
    estimator: str = "empirical"
    """empirical: gradients on observed labels; true: labels sampled from the model's own distribution."""
    batch_size: int = 1
    """Sequences per calibration mini-batch."""

    def __post_init__(self) -> None:
        _check_int("fisher.num_batches", self.num_batches, 1)
        _check_int("fisher.batch_size", self.batch_size, 1)
        if self.estimator not in FISHER_ESTIMATORS:
            _fail("fisher.estimator", self.estimator, ", ".join(FISHER_ESTIMATORS))


@dataclass
class StiefelSettings:
    """How the constrained factor is kept on the Stiefel manifold (Cayley-Adam, Li et al. 2020)."""

    factor: str = "B"
    """Which LoRA factor is constrained: B (d_out x r, orthonormal columns) or A (r x d_in, orthonormal rows)."""
    solver: str = "fixed-point"
    """Cayley transform solver: fixed-point iterations (the paper) or exact (Sherman-Morrison-Woodbury)."""
    iterations: int = 5
    """Fixed-point iterations per step (ignored by the exact solver)."""
    qr_period: int = 200
    """Re-project onto the manifold by QR every this many steps (0 = never)."""

    def __post_init__(self) -> None:
        if self.factor not in STIEFEL_FACTORS:
            _fail("stiefel.factor", self.factor, ", ".join(STIEFEL_FACTORS))
        if self.solver not in CAYLEY_SOLVERS:
            _fail("stiefel.solver", self.solver, ", ".join(CAYLEY_SOLVERS))
        _check_int("stiefel.iterations", self.iterations, 1)
        _check_int("stiefel.qr_period", self.qr_period, 0)


FOURIER_INITS = ("kaiming", "xavier")
FOURIER_SCALES = ("lora-step", "plain-idft")


@dataclass
class FourierSettings:
    """Fourier-FoRA (the LoRA Unleashed paper): each of A (r x d_in) and B (d_out x r) is Re(IFFT2(F)) of a spectral matrix F
    that is zero except at n fixed random locations, whose n values are the trainable coefficients."""

    n_coefficients: int = 4096
    """n: trainable spectral coefficients per adaptation matrix (capped at the matrix's size r * d)."""
    init: str = "kaiming"
    """Spatial variance A's coefficients are scaled to match: kaiming or xavier (B's start at 0)."""
    scale: str = "lora-step"
    """lora-step: the spectral map is scaled so an Adam step moves A and B as far as LoRA's (train.lr on LoRA's
    scale, ``fourier.step_matched_gain``); plain-idft: the paper's plain 1/(pq) inverse DFT, about 400x slower."""

    def __post_init__(self) -> None:
        _check_int("fourier.n_coefficients", self.n_coefficients, 1)
        if self.scale == "seed":  # its name until 2026-12-08: adapters saved before carry it in fora_config.json
            self.scale = "plain-idft"
        if self.scale not in FOURIER_SCALES:
            _fail("fourier.scale", self.scale, ", ".join(FOURIER_SCALES))
        if self.init not in FOURIER_INITS:
            _fail("fourier.init", self.init, ", ".join(FOURIER_INITS))


@dataclass
class LoraPlusSettings:
    """LoRA+ (Hayou et al. 2024, PEFT ``create_loraplus_optimizer``): B's learning rate is ``ratio`` x A's."""

    ratio: float = 16.0

    def __post_init__(self) -> None:
        _check_float("lora_plus.ratio", self.ratio, 0.0, float("inf"), lo_open=True)


@dataclass
class ForaConfig:
    """The FoRA method: where adapters go (layer budget K) and how they are trained.

    LoRA update at an adapted linear layer (W0: d_out x d_in):  W = W0 + (alpha / r) B A,
    B: (d_out, r), A: (r, d_in). Stiefel methods keep B^T B = I_r.
    """

    method: str = "fora"
    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Logical names (q, k, v, o, gate, up, down), resolved per architecture, or literal module names."""
    layer_budget: int | float = 0.5
    """K: an int (number of layers) or a float in (0, 1] (fraction of the decoder layers, rounded)."""
    fisher: FisherSettings = field(default_factory=FisherSettings)
    stiefel: StiefelSettings = field(default_factory=StiefelSettings)
    fourier: FourierSettings = field(default_factory=FourierSettings)
    """Used by fourier-fora and fg-fourier-fora."""
    lora_plus: LoraPlusSettings = field(default_factory=LoraPlusSettings)
    """Used by loraplus and fg-loraplus."""
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fisher, dict):
            self.fisher = _from_mapping(FisherSettings, self.fisher, "fisher.")
        if isinstance(self.stiefel, dict):
            self.stiefel = _from_mapping(StiefelSettings, self.stiefel, "stiefel.")
        if isinstance(self.fourier, dict):
            self.fourier = _from_mapping(FourierSettings, self.fourier, "fourier.")
        if isinstance(self.lora_plus, dict):
            self.lora_plus = _from_mapping(LoraPlusSettings, self.lora_plus, "lora_plus.")
        for name, cls in (("fisher", FisherSettings), ("stiefel", StiefelSettings), ("fourier", FourierSettings),
                          ("lora_plus", LoraPlusSettings)):
            if not isinstance(getattr(self, name), cls):
                _fail(name, getattr(self, name), section_hint(cls, name))
        if self.method not in METHODS:
            _fail("method", self.method, ", ".join(METHODS))
        _check_int("rank", self.rank, 1)
        _check_float("alpha", self.alpha, 0.0, float("inf"), lo_open=True)
        _check_float("dropout", self.dropout, 0.0, 0.999)
        if isinstance(self.target_modules, str) and "," in self.target_modules:
            items = ", ".join(t.strip() for t in self.target_modules.split(","))
            _fail("target_modules", self.target_modules, f"a list: write [{items}], not one comma-separated string")
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if (
            not isinstance(self.target_modules, (list, tuple))
            or not self.target_modules
            or not all(isinstance(t, str) and t for t in self.target_modules)
        ):
            _fail("target_modules", self.target_modules, "a non-empty list of module names, e.g. [q, k, v, up, down]")
        self.target_modules = list(self.target_modules)
        k = self.layer_budget
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            _fail("layer_budget", k, "an integer >= 1 or a fraction in (0, 1]")
        if isinstance(k, float) and not (0.0 < k <= 1.0):
            _fail("layer_budget", k, "an integer >= 1 or a fraction in (0, 1]")
        if isinstance(k, int) and k < 1:
            _fail("layer_budget", k, "an integer >= 1 or a fraction in (0, 1]")
        _check_int("seed", self.seed, 0)

    # -- derived -------------------------------------------------------------------------------
    @property
    def spec(self) -> MethodSpec:
        """What the method is made of (``methods.py``): layers, adapter, init, optimiser."""
        return METHOD_SPECS[self.method]

    @property
    def uses_fisher(self) -> bool:
        """True for methods that adapt only the Fisher-selected top-K layers."""
        return self.spec.fisher_layers

    @property
    def uses_stiefel(self) -> bool:
        """True for methods that keep one factor on the Stiefel manifold with Cayley-Adam."""
        return self.spec.stiefel

    @property
    def scaling(self) -> float:
        """The LoRA output scale s: alpha / r, or alpha / sqrt(r) for rsLoRA."""
        return self.alpha / (self.rank ** 0.5 if self.spec.rslora else self.rank)

    def num_layers_to_adapt(self, num_layers: int) -> int:
        """Resolve K against a model with ``num_layers`` decoder layers (all layers for lora/stiefel-lora)."""
        if not self.uses_fisher:
            return num_layers
        return resolve_layer_budget(self.layer_budget, num_layers)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForaConfig:
        if not isinstance(data, dict):
            raise ForaConfigError(f"a FoRA config must be a mapping, got {type(data).__name__}")
        return _from_mapping(cls, dict(data), "")


def resolve_layer_budget(budget: int | float, num_layers: int) -> int:
    """K as a layer count: an int is taken as is, a fraction f gives round(f * L) (at least 1).

    Raises ForaConfigError when K > L.
    """
    if isinstance(budget, float):
        k = max(1, int(round(budget * num_layers)))
    else:
        k = int(budget)
    if not 1 <= k <= num_layers:
        _fail("layer_budget", budget, f"1..{num_layers} layers (this model has {num_layers}) or a fraction in (0, 1]")
    return k
