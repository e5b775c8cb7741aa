"""The model registry side of the pipeline: champion vs challenger on the same items, a paired test, a
promotion that is race-safe and recorded in an append-only history, and the ``fora registry`` commands.

    config.py        the ``register`` section of the run config
    paired_test.py   McNemar's exact test and the paired bootstrap over items
    lock.py          a mutual-exclusion lock made of MLflow's unique registered-model names
    history.py       the append-only promotion history (registered-model tags)
    promotion.py     decide and move the alias, under the lock
    champion.py      the current champion: which version, its item scores, its model for scoring
"""
