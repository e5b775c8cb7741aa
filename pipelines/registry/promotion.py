"""Move the ``champion`` alias only on evidence, atomically, and write down why.

The evaluate step scores the current champion on exactly the items the challenger is scored on (same
tasks, same limit, same lm-eval: one *eval suite*, fingerprinted). Here, under the registry lock:

1. read the champion now (a read failure is raised, never taken for "no champion");
2. take its per-item scores: from this run's evaluation when it is the version measured there, else from
   the scores that version's own run logged on the same suite (the champion changed while this run
   trained: a concurrent run promoted); without either, the challenger is not promoted (nothing measured
   it against the model it would replace) and the reason says so;
3. the paired test (``significance.py``); promote when it is significant and the gain reaches the margin;
4. ``register.approval: manual`` only proposes: the ``challenger`` alias moves, a person promotes;
5. the decision (numbers, both versions, the suite) is a tag on the new version and an entry in the
   promotion history (``history.py``).

Two runs finishing together therefore serialise on the lock, and the second compares itself with the
first's version on the same items before it may replace it: the alias ends on the better one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from ..config.register import DEFAULT_METRIC
from .champion import CHALLENGER, CHAMPION, stored_item_scores, version_by_alias
from .history import append_entry
from .lock import registry_lock
from .significance import paired_test

log = logging.getLogger("fora")

DECISION_TAG = "champion_decision"


@dataclass
class Policy:
    test: str = "auto"
    margin: float = 0.0
    alpha: float = 0.05
    approval: str = "auto"


@dataclass
class Challenger:
    version: int
    items: dict[str, list[float]]
    """{group (task): [score per item]} of the new model on ``metric``."""
    suite: str
    """The eval suite's fingerprint."""
    metric: str = DEFAULT_METRIC
    """``register.metric``: which per-item scores are compared."""
    higher_is_better: bool = True
    measured: dict | None = None
    """{"version": v, "items": {...}} of the champion scored in the same run (None: there was none)."""
    data_fingerprint: str = ""
    by: str = ""
    broken_guards: list[str] | None = None
    """The ``register.guards`` it breaks (``guards.py``): any keeps it out."""


def _champion_items(tracking_uri: str, champion, challenger: Challenger) -> tuple[dict | None, str]:
    m = challenger.measured
    if m is not None and int(m["version"]) == int(champion.version):
        return m["items"], f"champion v{champion.version} {m.get('source', 'scored in this run')}"
    stored = stored_item_scores(tracking_uri, champion)
    items = (stored.get("tuned") or {}).get("items") or {} if isinstance(stored, dict) else {}
    if stored is not None and stored.get("suite") == challenger.suite and challenger.metric in items:
        return items[challenger.metric], (
            f"champion v{champion.version} changed during this run; compared with its logged scores on the same "
            "eval suite")
    measured = f"v{m['version']}" if m else "no champion"
    return None, (f"champion is v{champion.version} but this run measured {measured}, and v{champion.version} "
                  "has no item scores on this eval suite: not promoted (re-run, or promote by hand)")


def decide_and_apply(client: MlflowClient, tracking_uri: str, model_name: str, challenger: Challenger,
                     policy: Policy) -> dict:
    """The whole decision under the lock; returns the history entry (``promoted``: whether the alias moved
    to the challenger, ``proposed``: whether it became ``challenger`` awaiting approval)."""
    with registry_lock(client, model_name, holder=challenger.by):
        champion = version_by_alias(client, model_name, CHAMPION)
        test = None
        if champion is None:
            wins, reason = True, "no champion yet"
        elif int(champion.version) == challenger.version:
            wins, reason = True, "already champion (a re-run of the same registration)"
        else:
            items, source = _champion_items(tracking_uri, champion, challenger)
            if items is None:
                wins, reason = False, source
            else:
                try:
                    result = paired_test(challenger.items, items, test=policy.test, margin=policy.margin,
                                         alpha=policy.alpha, higher_is_better=challenger.higher_is_better,
                                         metric=challenger.metric)
                except ValueError as err:
                    wins, reason = False, f"{err}: not promoted"
                else:
                    test = result.to_dict()
                    wins = result.significant
                    reason = f"{'wins' if wins else 'does not win'}: {result.explain()}; {source}"
        if challenger.broken_guards and not reason.startswith("already champion"):
            reason = f"kept out by register.guards: {'; '.join(challenger.broken_guards)} (paired test: {reason})"
            wins = False
        previous = int(champion.version) if champion is not None else None
        action = "keep"
        if wins and previous != challenger.version:
            if policy.approval == "manual":
                client.set_registered_model_alias(model_name, CHALLENGER, challenger.version)
                action = "propose"
            else:
                client.set_registered_model_alias(model_name, CHAMPION, challenger.version)
                action = "promote"
        entry = {"action": action, "alias": CHALLENGER if action == "propose" else CHAMPION,
                 "version": challenger.version, "previous": previous, "reason": reason, "by": challenger.by,
                 "test": test, "suite": challenger.suite, "data_fingerprint": challenger.data_fingerprint,
                 "metric": challenger.metric, "guards_broken": challenger.broken_guards or []}
        client.set_model_version_tag(model_name, str(challenger.version), DECISION_TAG, json.dumps(entry))
        full = append_entry(client, model_name, entry)
    log.info("registry %s v%d: %s (%s)", model_name, challenger.version, action, reason)
    return {**full, "promoted": action == "promote", "proposed": action == "propose"}


def set_alias_by_hand(client: MlflowClient, model_name: str, version: int, reason: str, by: str,
                      alias: str = CHAMPION, action: str = "manual") -> dict:
    """A person moves ``alias`` to ``version`` (promote by hand, approve a proposal, or roll back); recorded
    like an automatic decision."""
    if not reason.strip():
        raise ValueError("a promotion by hand needs a reason (--reason)")
    client.get_model_version(model_name, str(version))  # raises when it does not exist
    with registry_lock(client, model_name, holder=by):
        current = version_by_alias(client, model_name, alias)
        client.set_registered_model_alias(model_name, alias, version)
        if alias == CHAMPION:
            proposed = version_by_alias(client, model_name, CHALLENGER)
            if proposed is not None and int(proposed.version) == version:
                client.delete_registered_model_alias(model_name, CHALLENGER)
        entry = {"action": action, "alias": alias, "version": version,
                 "previous": int(current.version) if current is not None else None, "reason": reason, "by": by}
        return append_entry(client, model_name, entry)


def rollback(client: MlflowClient, model_name: str, reason: str, by: str, to: int | None = None) -> dict:
    """Move ``champion`` back: to ``to``, else to the version it pointed to before its latest move."""
    if to is None:
        from .history import read_history

        current = version_by_alias(client, model_name, CHAMPION)
        moves = [e for e in read_history(client, model_name) if e["alias"] == CHAMPION
                 and e["action"] in ("promote", "manual", "rollback") and current is not None
                 and e["version"] == int(current.version) and e.get("previous")]
        if not moves:
            raise ValueError(f"'{model_name}': no earlier champion in the promotion history; give --to VERSION")
        to = int(moves[-1]["previous"])
    return set_alias_by_hand(client, model_name, to, reason, by, action="rollback")
