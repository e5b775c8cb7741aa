"""The ablation's search at an equal budget (``pipelines/ablation/search_plan.py``), on synthetic loss surfaces
whose optimum is known: every method spends the same number of trials, an optimum beyond the initial grid is
reached by edge extensions, one inside it is refined, a diverged value is never approached."""

import math

import pytest

from pipelines.ablation.search_plan import best_point, initial_design, next_point, propose_round
from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import RunConfig


def _bowl(lr_opt: float, slr_opt: float = 0.3):
    """A loss convex in log lr (and log stiefel_lr), minimal at (lr_opt, slr_opt)."""
    return lambda p: math.log(p["lr"] / lr_opt) ** 2 + 0.5 * math.log(p["stiefel_lr"] / slr_opt) ** 2


def _search(surfaces: dict, lr: list, slr: list, budget: int, step: float = 2.0,
            diverge_above: float = math.inf) -> dict[str, list[dict]]:
    """The search loop of the runner, with the trials' losses read off the surfaces."""
    def run(point):
        status = "diverged" if point["lr"] > diverge_above else "completed"
        return {**point, "status": status, "val_loss": None if status == "diverged" else surfaces[point["method"]](point)}

    tried = {m: [run({"method": m, **p}) for p in initial_design(m, lr, slr, 0.3)] for m in surfaces}
    for i in range(1, 50):
        arms = propose_round(tried, budget, step, i)
        if not arms:
            break
        for a in arms:
            tried[a["method"]].append(run(a))
    return tried


def test_every_method_spends_the_same_budget_on_distinct_settings():
    tried = _search({"lora": _bowl(3e-3), "fg-lora": _bowl(1e-4), "fora": _bowl(8e-4, 0.6)},
                    lr=[1e-3, 2e-3, 4e-3], slr=[0.3], budget=6)
    assert {m: len(t) for m, t in tried.items()} == {"lora": 6, "fg-lora": 6, "fora": 6}
    for t in tried.values():
        assert len({(p["lr"], p["stiefel_lr"]) for p in t}) == len(t)


def test_an_optimum_beyond_the_grid_is_reached_and_bracketed():
    # fg-lora's optimum sits 10x below the grid's smallest value: each round steps x2 further down
    tried = _search({"fg-lora": _bowl(1e-4)}, lr=[1e-3, 2e-3, 4e-3], slr=[0.3], budget=7)["fg-lora"]
    lrs = sorted(p["lr"] for p in tried)
    assert lrs[:4] == pytest.approx([6.25e-5, 1.25e-4, 2.5e-4, 5e-4])  # brute force: the x2 lattice around 1e-4
    best = best_point(tried)
    assert best["lr"] == pytest.approx(1.25e-4)  # the lattice point nearest 1e-4 in log distance
    assert min(lrs) < best["lr"] < max(lrs)  # bracketed: a value on each side was tried


def test_an_optimum_inside_the_grid_is_refined_at_half_the_step():
    tried = _search({"lora": _bowl(2.6e-3)}, lr=[1e-3, 2e-3, 4e-3], slr=[0.3], budget=5)["lora"]
    extra = [p["lr"] for p in tried[3:]]
    # 2e-3 is the best start and not on an edge: the midpoint towards its better neighbour (4e-3) comes first
    assert extra[0] == pytest.approx(math.sqrt(2e-3 * 4e-3), rel=1e-5)
    assert abs(math.log(best_point(tried)["lr"] / 2.6e-3)) < abs(math.log(2e-3 / 2.6e-3))


def test_the_search_never_extends_towards_a_diverged_value():
    # the loss falls towards large lr, but 4e-3 diverges: the best (2e-3) is not an edge, nothing above is tried
    tried = _search({"lora": _bowl(1.0)}, lr=[1e-3, 2e-3, 4e-3], slr=[0.3], budget=5, diverge_above=3e-3)["lora"]
    assert max(p["lr"] for p in tried) == 4e-3
    assert best_point(tried)["lr"] < 4e-3


def test_a_stiefel_method_searches_both_learning_rates():
    tried = _search({"fora": _bowl(1e-3, 0.6)}, lr=[5e-4, 1e-3, 2e-3], slr=[0.3], budget=6)["fora"]
    assert {p["stiefel_lr"] for p in tried} >= {0.3, 0.6}  # the Stiefel axis is extended from one value
    assert best_point(tried) == next(p for p in tried if p["lr"] == 1e-3 and p["stiefel_lr"] == 0.6)
    lora = initial_design("lora", [1e-3, 2e-3], [0.1, 0.3], 0.3)
    assert lora == [{"lr": 1e-3, "stiefel_lr": 0.3}, {"lr": 2e-3, "stiefel_lr": 0.3}]  # one axis only
    assert len(initial_design("fora", [1e-3, 2e-3], [0.1, 0.3], 0.3)) == 4  # the grid for the Stiefel methods


def test_the_stiefel_axis_is_varied_even_while_the_lr_keeps_hitting_an_edge():
    # fora's AdamW optimum sits far below the grid, so lr is on an edge every round; with 5 trials the Stiefel
    # lr must still be moved off its single starting value (the axes take turns), not left untuned
    tried = _search({"fora": _bowl(1e-5, 0.6)}, lr=[1e-3, 2e-3, 4e-3], slr=[0.3], budget=5)["fora"]
    # round 1 moves the Stiefel lr (tried at one value: x2 first), round 2 the lr from the new best (its lr is the
    # smallest tried, so /2), on the best's Stiefel line
    assert [(p["lr"], p["stiefel_lr"]) for p in tried[3:]] == [(1e-3, 0.6), (5e-4, 0.6)]


def test_proposals_depend_only_on_the_results_so_a_resume_proposes_the_same():
    tried = [{"lr": 1e-3, "stiefel_lr": 0.3, "val_loss": 2.0, "status": "completed"},
             {"lr": 2e-3, "stiefel_lr": 0.3, "val_loss": 1.0, "status": "completed"}]
    assert next_point("lora", tried, 2.0, 1) == next_point("lora", list(tried), 2.0, 1) == \
        {"lr": 4e-3, "stiefel_lr": 0.3}
    assert next_point("lora", [{**tried[0], "status": "diverged"}], 2.0, 1) is None


@pytest.mark.parametrize("edit, message", [
    ({"lr": [1e-4, 1e-3]}, "'ablation.lr': [0.0001, 0.001] (allowed: neighbouring values at most x2 apart"),
    ({"search_seed": 1}, "'ablation.search_seed': 1 (allowed: a seed not in ablation.seeds [0, 1, 2]"),
    ({"step": 3}, "'ablation.step': 3 (allowed: a number in (1, 2]"),
    ({"report_rows": 0}, "'ablation.report_rows': 0 (allowed: an integer >= 1)"),
])
def test_a_grid_too_coarse_or_a_shared_seed_is_refused(edit, message):
    with pytest.raises(RunConfigError) as e:
        RunConfig.from_dict({"ablation": edit})
    assert message in str(e.value)
