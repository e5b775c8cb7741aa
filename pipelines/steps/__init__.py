"""The five steps of the pipeline as plain typed functions, and the chain that runs them.

    data_prep.py, calibrate.py, train.py, evaluate.py, register.py
                    the steps: folders in, folders out, no tracking of their own (train.py drives the loop of
                    ``pipelines/training/``)
    eval_table.py   the evaluation's Markdown table;  evaluation_log.py  its metrics and answers in MLflow
    stages.py       each step with its MLflow logging and input checks: what the CLI, the KFP components and
                    the local run call
    local_run.py    the five stages in one process (``fora run``)

Imports ``config``, ``runtime``, ``data``, ``evaluation``, ``registry``, ``preflight`` and ``training``; never the
sweep or the DAGs.
"""
