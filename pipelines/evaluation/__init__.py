"""Measuring a model, apart from the step that runs the measurements.

    metrics.py         the metric names, their directions, and the scorers of a generated answer
    lm_eval_suite.py   lm-eval tasks (built-in, by name, the user's YAMLs): metrics, per-item results, fingerprint
    heldout.py         the user's held-out data: items, per-item loss, batched greedy answers and their scores
    score_cache.py     the base model's scores kept by model and suite fingerprints
    general_text.py    perplexity and KL drift on general text (forgetting)
    adapter_report.py  the adapter's own diagnostics: effective rank, orthogonality, norms
    stats.py           paired statistics over items: bootstrap intervals, sign-flip tests

Imports ``config``, ``runtime``, ``data`` and fora_core.
"""
