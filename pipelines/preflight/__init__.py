"""A run config checked before any work: against its model's architecture (from ``config.json`` on the meta
device), its data source and the memory the plan needs on the accelerator it asks for.

    checks.py   ``preflight``, ``check_model``, ``check_data``, ``plan_report``: what ``fora validate``, the resolve
                step (the first of ``fora run`` and of the KFP pipeline), ``fora sweep`` and ``fora ablate`` call
    memory.py   the memory plan against the accelerator's capacity

Imports ``fora_core``, ``config``, ``runtime`` and ``data``; the CLI, the steps, the sweep and the ablation call it.
"""
