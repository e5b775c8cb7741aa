"""``fora ablate``: every method on the same data and step budget, tuned on its own learning-rate grid,
re-run over seeds and scored, with confidence intervals.

    runner.py   the phases (search, seeds, K curves, scoring), each a resumable Ray Tune run of the sweep's trials
    report.py   report.md, its tables and plots, and the plain-words reading

The ``ablation`` section of the run config is ``config/ablation.py``; the statistics are
``evaluation/stats.py``. Imports the sweep and every package below it.
"""
