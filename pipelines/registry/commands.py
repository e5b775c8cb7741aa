"""``fora registry``: the registry as a person sees it, and the hand moves they make.

    fora registry list CONFIG                                  versions: aliases, metric, method, K, data
    fora registry history CONFIG                               every promotion decision, oldest first
    fora registry show CONFIG VERSION                          one version's tags and its decision, in full
    fora registry promote CONFIG VERSION --reason "..."        move champion (or --alias) by hand
    fora registry rollback CONFIG [--to VERSION] --reason "..."  champion back to the one it replaced

The registry is the config's ``register.tracking_uri`` and ``register.model_name``. Hand moves take the
same lock as the pipeline and are appended to the same history, with who made them (``--by``, default
$USER) and why.
"""

from __future__ import annotations

import getpass
import json
import re
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..config.errors import RunConfigError
from ..config.run_config import RunConfig
from ..runtime.tracking import check_server
from .champion import CHALLENGER, CHAMPION
from .history import history_table, read_history
from .promotion import DECISION_TAG, rollback, set_alias_by_hand


def _client(run: RunConfig) -> MlflowClient:
    uri = run.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():  # MLflow would create it
        raise RunConfigError(f"no MLflow database at {uri[len('sqlite:///'):]}: nothing was registered there yet "
                             "(is output_dir, or register.tracking_uri, the one the pipeline used?)")
    check_server(uri)
    client = MlflowClient(run.tracking_uri)
    try:
        client.get_registered_model(run.register.model_name)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RunConfigError(f"no registered model '{run.register.model_name}' (register.model_name) in "
                                 f"{run.tracking_uri}") from None
        raise
    return client


def versions_table(client: MlflowClient, run: RunConfig) -> str:
    name, metric = run.register.model_name, run.register.metric
    aliases: dict[int, list[str]] = {}
    for alias, v in client.get_registered_model(name).aliases.items():
        aliases.setdefault(int(v), []).append(alias)
    rows = ["| version | aliases | " + metric + " | method | K | data fingerprint | eval suite | decision | run |",
            "|---|---|---|---|---|---|---|---|---|"]
    for v in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
        t = v.tags
        rows.append(f"| {v.version} | {', '.join(aliases.get(int(v.version), [])) or '-'} | {t.get(metric, '-')} | "
                    f"{t.get('method', '-')} | {t.get('K', '-')} | {t.get('data_fingerprint', t.get('data_hash', '-'))[:16]}"
                    f" | {t.get('eval_suite', '-')} | {t.get('promotion', '-')} | {(v.run_id or '')[:8]} |")
    return "\n".join(rows) + "\n"


def show_version(client: MlflowClient, run: RunConfig, version: int) -> str:
    v = client.get_model_version(run.register.model_name, str(version))
    tags = dict(v.tags)
    decision = json.loads(tags.pop(DECISION_TAG, "null") or "null")
    lines = [f"{run.register.model_name} version {v.version} (run {v.run_id}, source {v.source})"]
    lines += [f"  {k}: {val}" for k, val in sorted(tags.items())]
    if decision:
        lines.append(f"  decision: {decision['action']} (previous champion: {decision.get('previous') or 'none'})")
        lines.append(f"    {decision['reason']}")
    return "\n".join(lines) + "\n"


def registry_command(run: RunConfig, action: str, version: int | None = None, reason: str = "",
                     by: str = "", alias: str = "champion", to: int | None = None) -> str:
    """Run one ``fora registry`` action; returns what to print."""
    client = _client(run)
    name = run.register.model_name
    who = by or f"{getpass.getuser()} (fora registry)"
    if action == "list":
        return versions_table(client, run)
    if action == "history":
        entries = read_history(client, name)
        return history_table(entries) if entries else f"'{name}' has no promotion history yet\n"
    try:
        if action == "show":
            return show_version(client, run, _need(version))
        if action == "promote":
            check_alias(alias)
            e = set_alias_by_hand(client, name, _need(version), reason, who, alias=alias)
        elif action == "rollback":
            e = rollback(client, name, reason, who, to=to)
        else:
            raise RunConfigError(f"unknown registry action '{action}' (allowed: list, history, show, promote, "
                                 "rollback)")
    except ValueError as err:
        raise RunConfigError(str(err)) from None
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            missing = to if action == "rollback" else version
            have = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            raise RunConfigError(f"'{name}' has no version {missing} (it has {_ranges(have) or 'none'})") from None
        raise
    return (f"{name}: {e['alias']} -> version {e['version']} (was {e.get('previous') or 'none'}); recorded as "
            f"history entry {e['seq']}: {e['action']} by {e['by']}: {e['reason']}\n")


def _need(version: int | None) -> int:
    if version is None:
        raise RunConfigError("give the VERSION")
    if version < 1:
        raise RunConfigError(f"version {version}: registry versions start at 1")
    return version


PROJECT_ALIASES = (CHAMPION, CHALLENGER)
ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def check_alias(alias: str) -> None:
    """champion, challenger, or a custom alias (lower case letters, digits, '-', '_'; not MLflow's reserved
    'latest' or 'v<N>'). A project alias in another case is refused: MLflow would keep it beside the real one."""
    if alias in PROJECT_ALIASES:
        return
    if alias.lower() in PROJECT_ALIASES:
        raise RunConfigError(f"--alias {alias!r}: aliases are case-sensitive in MLflow, so this would add a second "
                             f"alias beside '{alias.lower()}'; write --alias {alias.lower()}")
    if not ALIAS.match(alias) or alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise RunConfigError(f"--alias {alias!r} (allowed: champion, challenger, or a custom alias of lower-case "
                             "letters, digits, '-' and '_', not 'latest' or v<N>)")


def _ranges(versions: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out: list[str] = []
    for v in versions:
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)
