"""The five steps of the pipeline as plain typed functions, and the chain that runs them.

    data_prep.py, calibrate.py, train.py (+ train_contexts.py, train_outputs.py), evaluate.py, register.py
                    the steps: folders in, folders out, no tracking of their own
    eval_table.py   the evaluation's Markdown table;  evaluation_log.py  its metrics and answers in MLflow
    stages.py       each step with its MLflow logging and input checks: what the CLI, the KFP components and
                    the local run call
    local_run.py    the five stages in one process (``fora run``)
    preflight.py    a config checked against its model's architecture and its data source before any work

Imports ``config``, ``runtime``, ``data``, ``evaluation`` and ``registry``; never the sweep or the DAGs.
"""
