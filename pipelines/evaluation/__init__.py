"""Measuring a model, apart from the step that runs the measurements.

    lm_eval_suite.py   the lm-eval multiple-choice suite: task files, scoring, per-item results, fingerprint
    general_text.py    perplexity and KL drift on general text (forgetting)
    adapter_report.py  the adapter's own diagnostics: effective rank, orthogonality, norms
    stats.py           paired statistics over items: bootstrap intervals, sign-flip tests

Imports ``config``, ``runtime``, ``data`` and fora_core.
"""
