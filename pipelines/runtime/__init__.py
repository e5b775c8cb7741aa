"""The infrastructure a step runs on: files and object storage, Ray, MLflow, models.

    storage.py        local paths and s3:// URIs behind one API (boto3, pyarrow for Ray)
    atomic.py         writes and folder swaps that are whole or absent
    checkpoints.py    checkpoint namespaces and the exact-resume fingerprint
    ray_runtime.py    starting or joining Ray, placement checks;  ray_jobs.py submitting and watching Ray jobs
    tracking.py       reaching the MLflow server;  metric_buffer.py step metrics that survive an MLflow outage
    models.py         resolving ``model`` (a built-in name, a folder, an HF id, an s3:// URI) to a source

Imports ``config`` and fora_core; knows nothing of data, steps or the sweep.
"""
