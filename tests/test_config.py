import pytest

from fora_core import ForaConfig, ForaConfigError
from fora_core.config import resolve_layer_budget


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(method="vera"), "'method'"),
        (dict(rank=0), "'rank'"),
        (dict(alpha=-1), "'alpha'"),
        (dict(dropout=1.5), "'dropout'"),
        (dict(target_modules=[]), "'target_modules'"),
        (dict(layer_budget=0), "'layer_budget'"),
        (dict(layer_budget=1.5), "'layer_budget'"),
        (dict(layer_budget="half"), "'layer_budget'"),
        (dict(fisher={"estimator": "kfac"}), "'fisher.estimator'"),
        (dict(fisher={"num_batches": 0}), "'fisher.num_batches'"),
        (dict(stiefel={"solver": "newton"}), "'stiefel.solver'"),
        (dict(stiefel={"factor": "C"}), "'stiefel.factor'"),
        (dict(stiefel={"qr_period": -1}), "'stiefel.qr_period'"),
    ],
)
def test_invalid_values_name_the_field_and_allowed_values(kwargs, field):
    with pytest.raises(ForaConfigError, match=field) as info:
        ForaConfig(**kwargs)
    assert "allowed" in str(info.value)


def test_unknown_keys_are_named():
    with pytest.raises(ForaConfigError, match="unknown field 'rnak'"):
        ForaConfig.from_dict({"rnak": 8})
    with pytest.raises(ForaConfigError, match="unknown field 'stiefel.iters'"):
        ForaConfig.from_dict({"stiefel": {"iters": 3}})


def test_defaults_and_round_trip():
    cfg = ForaConfig()
    assert (cfg.method, cfg.rank, cfg.alpha, cfg.dropout) == ("fora", 32, 64.0, 0.05)
    assert cfg.target_modules == ["q", "k", "v", "up", "down"]
    assert cfg.stiefel.factor == "B" and cfg.fisher.estimator == "empirical"
    assert ForaConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.scaling == 2.0


def test_methods_flags():
    flags = {m: (ForaConfig(method=m).uses_fisher, ForaConfig(method=m).uses_stiefel)
             for m in ("fora", "fg-lora", "stiefel-lora", "lora")}
    assert flags == {"fora": (True, True), "fg-lora": (True, False),
                     "stiefel-lora": (False, True), "lora": (False, False)}


def test_layer_budget_resolution():
    assert resolve_layer_budget(0.5, 30) == 15
    assert resolve_layer_budget(1.0, 30) == 30
    assert resolve_layer_budget(0.01, 30) == 1
    assert resolve_layer_budget(7, 30) == 7
    assert ForaConfig(method="lora", layer_budget=3).num_layers_to_adapt(30) == 30
    with pytest.raises(ForaConfigError, match="1..30 layers"):
        resolve_layer_budget(31, 30)
