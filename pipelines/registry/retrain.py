"""Should this run train at all? A scheduled run whose recipe (data fingerprint + every setting that decides
the model, ``data/fingerprint.py``) equals the one the current champion was trained on would spend its GPU
hours re-making the champion; one whose recipe equals an already registered and judged challenger's would
re-make a model that lost. Either may stop after the cheap first step and say so.

``register.skip_unchanged``: ``scheduled`` (default: only recurring runs skip), ``always``, ``never``.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from .champion import CHAMPION, version_by_alias

SKIP_MODES = ("scheduled", "always", "never")


def skip_decision(tracking_uri: str, model_name: str, recipe: str, mode: str, scheduled: bool
                  ) -> tuple[bool, str]:
    """(skip, why)."""
    if mode == "never" or (mode == "scheduled" and not scheduled):
        return False, f"training (register.skip_unchanged={mode}{', not a scheduled run' if mode == 'scheduled' else ''})"
    if recipe.startswith("unresolved:") or "unresolved:" in recipe:
        return False, "training: the data source's identity could not be resolved"
    client = MlflowClient(tracking_uri)
    champ = version_by_alias(client, model_name, CHAMPION)
    if champ is not None and champ.tags.get("recipe_fingerprint") == recipe:
        return True, (f"skipped: champion v{champ.version} was trained on the same data "
                      f"({champ.tags.get('data_fingerprint', '?')}) with the same settings; nothing to retrain")
    same = [v for v in _versions(client, model_name) if v.tags.get("recipe_fingerprint") == recipe
            and v.tags.get("promotion") in ("keep", "promote", "propose")]
    if same:
        v = max(same, key=lambda v: int(v.version))
        return True, (f"skipped: v{v.version} was already trained on the same data "
                      f"({v.tags.get('data_fingerprint', '?')}) with the same settings and judged "
                      f"({v.tags['promotion']}); retraining would make the same model")
    if champ is None:
        return False, "training: no champion yet"
    return False, f"training: the data or settings differ from champion v{champ.version}'s"


def _versions(client: MlflowClient, model_name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return client.search_model_versions(f"name = '{model_name}'")
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
