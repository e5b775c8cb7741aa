"""The ablation's claims (``pipelines/ablation/claims.py``) on a synthetic summary whose per-seed numbers are
chosen by hand: each interval against the textbook paired t-interval, a tie called a tie, the mechanism split
and the additivity interaction computed seed by seed, and the paper table's verdicts following the intervals."""

import math

import numpy as np
import pytest
from scipy import stats

from pipelines.ablation.claims import additivity, compare, k_comparisons, mechanism, reading
from pipelines.ablation.report import paper_rows
from pipelines.evaluation.stats import seed_mean_ci

SEEDS = (0, 1, 2)
# report-split loss per method and seed (nats/token); the rest of the metrics follow from these below
LOSS = {
    "lora": [2.80, 2.90, 2.85],
    "fg-lora": [2.85, 2.85, 2.86],          # - lora: +0.05, -0.05, +0.01 -> a tie
    "fg-lora-orth": [2.79, 2.88, 2.84],     # - fg-lora: -0.06, +0.03, -0.02 -> a tie
    "fora": [2.70, 2.79, 2.76],             # - lora: -0.10, -0.11, -0.09 -> fora lower
    "fora-frozen-b": [2.75, 2.84, 2.80],
    "stiefel-lora": [2.78, 2.88, 2.84],
}


def _summary(k_curve: dict | None = None) -> dict:
    seeds, scores = [], {}
    for m, losses in LOSS.items():
        for s, loss in zip(SEEDS, losses, strict=True):
            tid = f"{m}-{s}"
            seeds.append({"method": m, "seed": s, "trial_id": tid, "K": 15 if m != "lora" else 30})
            scores[tid] = {"tuned": {"metrics": {"heldout/perplexity": math.exp(loss), "general/perplexity": 20 + 10 * loss,
                                                 "kl_drift": loss / 10, "effective_rank_ratio": 1.0 - loss / 10}}}
    k_rows, k_scores = [], {}
    for (m, k), losses in (k_curve or {}).items():
        for s, loss in zip(SEEDS, losses, strict=True):
            tid = f"{m}-K{k}-{s}"
            k_rows.append({"method": m, "seed": s, "trial_id": tid, "K": k})
            k_scores[tid] = {"tuned": {"metrics": {"heldout/perplexity": math.exp(loss)}}}
    return {"seeds": seeds, "seed_scores": scores, "k_curves": k_rows, "k_scores": k_scores,
            "split": {"selection": 100, "report": 400}, "search_budget": 5,
            "config": {"ablation": {"seeds": list(SEEDS), "search_seed": 100}}}


def _textbook(d: list[float]) -> tuple[float, float, float]:
    d = np.asarray(d)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def test_each_comparison_is_the_textbook_paired_t_interval_and_a_tie_is_called_a_tie():
    s = _summary()
    c = compare(s, "fora", "lora", "report_loss")
    mean, lo, hi = _textbook([a - b for a, b in zip(LOSS["fora"], LOSS["lora"], strict=True)])
    assert (c["mean"], c["low"], c["high"]) == pytest.approx((mean, lo, hi))
    assert hi < 0 and c["verdict"] == "fora lower (better)"
    tie = compare(s, "fg-lora", "lora", "report_loss")
    assert tie["low"] < 0 < tie["high"] and tie["verdict"] == "a tie (the interval includes 0)"
    rank = compare(s, "fora", "lora", "effective_rank_ratio")  # higher rank is neither better nor worse
    assert rank["verdict"] == "lora lower"
    # scipy's own paired t-test agrees with the interval's verdict
    assert stats.ttest_rel(LOSS["fora"], LOSS["lora"]).pvalue < 0.05
    assert stats.ttest_rel(LOSS["fg-lora"], LOSS["lora"]).pvalue > 0.05


def test_the_reading_says_tie_where_the_interval_holds_zero_and_splits_the_mechanism():
    lines = reading(_summary())
    assert lines[0].startswith("Each method's setting was chosen on 100 selection rows with seed 100")
    fora_line = next(x for x in lines if x.startswith("fora - lora"))
    assert "report-split loss -0.1000 [" in fora_line and "fora lower (better)" in fora_line
    fg_line = next(x for x in lines if x.startswith("fg-lora - lora"))
    assert "report-split loss +0.0033 [" in fg_line and "a tie (the interval includes 0)" in fg_line
    mech = mechanism(_summary())
    assert len(mech) == 4 and mech[0].startswith("Mechanism, report-split loss: the start accounts for")
    start = compare(_summary(), "fg-lora-orth", "fg-lora", "report_loss")
    manifold = compare(_summary(), "fora", "fg-lora-orth", "report_loss")
    # start + manifold = fora - fg-lora, seed by seed, so the means add exactly
    assert start["mean"] + manifold["mean"] == pytest.approx(compare(_summary(), "fora", "fg-lora",
                                                                     "report_loss")["mean"])


def test_additivity_is_the_per_seed_interaction():
    add = additivity(_summary())
    inter = [f - g - st + lo for f, g, st, lo in zip(LOSS["fora"], LOSS["fg-lora"], LOSS["stiefel-lora"],
                                                      LOSS["lora"], strict=True)]
    mean, lo, hi = _textbook(inter)
    assert (add["mean"], add["low"], add["high"]) == pytest.approx((mean, lo, hi))
    assert add["verdict"] == ("super-additive" if hi < 0 else "sub-additive" if lo > 0 else
                              "a tie with additive (the interval includes 0)")


def test_k_curves_are_paired_with_the_seeds_phase_and_the_paper_rows_follow_the_intervals():
    s = _summary({("fora", 8): [2.71, 2.80, 2.76], ("fg-lora", 8): [2.95, 3.05, 2.99]})
    fora = k_comparisons(s, "fora")
    assert fora[0]["K"] == 8 and fora[0]["low"] < 0 < fora[0]["high"]
    fg = k_comparisons(s, "fg-lora")
    assert fg[0]["low"] > 0  # fg-lora worse at K = 8 on every seed
    table = {m: {"report_loss": seed_mean_ci(LOSS[m])[:3], "effective_rank_ratio": None, "general_perplexity": None,
                 "kl_drift": None, "tokens_per_s": None} for m in LOSS}
    rows = "\n".join(paper_rows(s, table))
    assert "| loss, LoRA-all vs FoRA at half the parameters (FoRA lower) | FoRA better |" in rows
    assert "| reproduces |" in rows.splitlines()[2]
    assert "consistent with flat: no K differs beyond its interval (3 seeds)" in rows
    assert "reproduces: K=8 worse" in rows


def test_seed_mean_interval_is_scipys_t_interval():
    x = [2.1, 2.4, 2.2, 2.6]
    mean, lo, hi, n = seed_mean_ci(x)
    want = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert n == 4 and mean == pytest.approx(np.mean(x)) and (lo, hi) == pytest.approx(want)
    assert seed_mean_ci([3.0])[:3] == (3.0, 3.0, 3.0)



def test_the_ablation_page_quotes_the_committed_report_word_for_word():
    """``make ablation-docs`` splices the report's tables and reading into docs/sweeps-and-ablation.md; nothing
    may drift."""
    import json
    from pathlib import Path

    from pipelines.ablation.publish import END, START, quoted_block, section, splice

    root = Path(__file__).resolve().parents[1]
    report = (root / "docs" / "ablation" / "report.md").read_text()
    page = (root / "docs" / "sweeps-and-ablation.md").read_text()
    block = quoted_block(report)
    assert block in page, "docs/sweeps-and-ablation.md differs from docs/ablation/report.md: run `make ablation-docs`"
    reading_lines = [x[2:] for x in section(report, "Reading")]
    assert reading_lines == json.loads((root / "docs" / "ablation" / "report.json").read_text())["reading"]
    assert len(reading_lines) >= 5 and "selection rows" in report
    assert splice(f"a\n{START}\nold\n{END}\nb", "NEW") == "a\nNEW\nb"


def test_one_seed_shows_a_value_and_no_interval_or_verdict():
    """A one-seed run (the methods ablation) must not print [x, x] as if it were an interval, nor a verdict."""
    from pipelines.ablation.claims import describe
    from pipelines.ablation.report import _ci

    one = {"metric": "report_loss", "mean": 0.1858, "low": 0.1858, "high": 0.1858, "n": 1,
           "verdict": "one seed: no interval"}
    assert describe(one) == "+0.1858 (one seed: no interval)"
    assert _ci((3.0948, 3.0948, 3.0948), "{:.4f}", seeds=1) == "3.0948"
    assert _ci((3.0948, 3.0, 3.2), "{:.4f}", seeds=3) == "3.0948 [3.0000, 3.2000]"
