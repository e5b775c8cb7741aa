"""The model registry side of the pipeline: champion vs challenger on the same items, a paired test, a
promotion that is race-safe and recorded in an append-only history, and the ``fora registry`` commands.

    significance.py  is the challenger better? McNemar's exact test, or the paired bootstrap of
                     evaluation/stats.py, over the items both were scored on
    lock.py          a mutual-exclusion lock made of MLflow's unique registered-model names
    history.py       the append-only promotion history (registered-model tags)
    promotion.py     decide and move the alias, under the lock
    guards.py        ``register.guards``: metrics that must not get worse than the base model's
    champion.py      the current champion: which version, its item scores, its model for scoring
    model_card.py    the registered version's model card;  retrain.py  when a scheduled run may skip training
    pyfunc_model.py  the MLflow pyfunc loader of a registered version (merged weights or adapter on its base)
    commands.py      ``fora registry`` (history, promote, rollback)

The ``register`` section of the run config is ``config/register.py``. Imports ``config``, ``runtime`` and
``evaluation``; the register step (``steps/register.py``) calls it.
"""
