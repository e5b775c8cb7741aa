"""The run config: one validated schema loaded from YAML, and everything that checks it without touching
a model, a service or the network.

    run_config.py   RunConfig and its data / train / storage / ray sections; load and parse
    evaluation.py   the ``eval`` section (tasks, held-out data and metrics) and which metrics it produces
    sweep.py        the ``sweep`` section;  ablation.py the ``ablation`` section;  register.py the ``register`` section
    resources.py    the ``resources`` section (each step's pod) and how it applies to a KFP task
    overrides.py    ``--set key=value`` overrides and the YAML loader
    checks.py       the field checks every section uses (one error format: field, value, allowed values)
    errors.py       the user-error classes and ``one_line_user_errors``

The bottom package: imports fora_core only, never another package of ``pipelines``.
"""
