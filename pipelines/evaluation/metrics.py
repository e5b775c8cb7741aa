"""The metric namespace the evaluate step produces, each metric's direction, and the per-item scorers of a
generated answer against its reference.

**Names.** Every number the evaluate step writes for a model is one flat name, the same in
``eval_results.json``, MLflow (``tuned/<name>``), ``item_scores.json``, ``register.metric`` and
``register.guards``:

    acc_avg, acc_norm_avg          macro means over the lm-eval tasks that report acc / acc_norm
    <task>/<metric>                any lm-eval task's metric (filter "none"); <task>/<metric>:<filter> otherwise
    heldout/loss                   mean response cross-entropy per held-out item (nats/token); lower is better
    heldout/perplexity             exp of the token-weighted mean of the same losses; lower is better
    heldout/<scorer>               a generation scorer below, mean over the items it scores
    general/perplexity             general-text perplexity (forgetting); lower is better

**Generation scorers** (``score_generation``), each item's score in [0, 1]; ``generation`` is the model's greedy
answer, ``reference`` the held-out answer:

    exact     1 if the whitespace-normalised, case-folded generation equals the reference's
    contains  1 if the generation mentions any of ``eval.heldout.contains`` (case-insensitive); scored only on
              the items whose reference mentions one of them (the items that should state the fact)
    regex     1 if ``eval.heldout.regex`` matches the generation (``re.search``)
    json      1 if the generation parses as JSON (``json.loads`` of the stripped text)
    rougeL    ROUGE-L F1 (longest common subsequence of words, Porter-stemmed; Google's ``rouge-score``)
    chrf      chrF (character n-gram F-score, beta 2, ``sacrebleu``) / 100
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from ..config.evaluation import GENERATION_SCORERS

HELDOUT_METRICS = ("loss", *GENERATION_SCORERS)
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "word_perplexity", "byte_perplexity", "bits_per_byte", "kl_drift",
                   "ter", "wer", "cer")
"""Metric names (the part after the last '/', without a ':filter') for which lower is better."""

DIAGNOSTIC_METRICS = ("general/perplexity", "kl_drift", "effective_rank_ratio", "stiefel_factor_drift")
"""What the evaluate step measures about the tuned model beside its scores, as metrics like any other (in
``eval_results.json``, MLflow ``tuned/<name>``, the KFP Metrics artifact; usable in ``register.guards``):
general-text perplexity (base and tuned), KL drift from the base (nats/token), the updates' effective rank / r,
and how far a Stiefel factor moved from its init (||X - X0|| / ||X0||). No per-item scores."""


def metric_leaf(name: str) -> str:
    """'boolq/acc' -> 'acc'; 'gsm8k/exact_match:strict-match' -> 'exact_match'."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def higher_is_better(name: str, declared: dict[str, bool] | None = None) -> bool:
    """The direction of ``name``: ``declared`` (what lm-eval's task says) first, else by its leaf name."""
    if declared and name in declared:
        return bool(declared[name])
    return metric_leaf(name) not in LOWER_IS_BETTER


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _exact(generation: str, reference: str, **_) -> float:
    return float(_normalise(generation) == _normalise(reference))


def _contains(generation: str, reference: str, *, contains: list[str], **_) -> float | None:
    wanted = [s.casefold() for s in contains]
    if not any(s in reference.casefold() for s in wanted):
        return None  # this item is not about the fact
    return float(any(s in generation.casefold() for s in wanted))


def _regex(generation: str, reference: str, *, regex: str, **_) -> float:
    return float(re.search(regex, generation) is not None)


def _json_valid(generation: str, reference: str, **_) -> float:
    try:
        json.loads(generation.strip())
    except ValueError:
        return 0.0
    return 1.0


_ROUGE = None


def _rouge_l(generation: str, reference: str, **_) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_ROUGE.score(reference, generation)["rougeL"].fmeasure)


def _chrf(generation: str, reference: str, **_) -> float:
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(generation, [reference]).score) / 100.0


SCORERS: dict[str, Callable[..., float | None]] = {
    "exact": _exact, "contains": _contains, "regex": _regex, "json": _json_valid, "rougeL": _rouge_l, "chrf": _chrf}


def score_generation(scorer: str, generation: str, reference: str, *, contains: list[str] | None = None,
                     regex: str = "") -> float | None:
    """One item's score under ``scorer`` (see the module docstring); None where the scorer does not apply."""
    return SCORERS[scorer](generation, reference, contains=contains or [], regex=regex)
