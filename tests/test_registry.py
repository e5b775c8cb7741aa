"""Promotion on evidence: the paired tests against textbook references, the registry lock, alias reads that
do not mistake an error for "no champion", and two challengers promoted concurrently through a real
``mlflow server`` (a separate process on a port) ending with the alias on the better one."""

import json
import math
import multiprocessing as mp
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from scipy.stats import binomtest, norm

from pipelines.registry.champion import CHAMPION, version_by_alias
from pipelines.registry.history import read_history
from pipelines.registry.lock import RegistryLockTimeout, lock_name, registry_lock
from pipelines.registry.promotion import Challenger, Policy, decide_and_apply, rollback, set_alias_by_hand
from pipelines.registry.significance import mcnemar_exact_p, paired_test

# ---------------------------------------------------------------- the paired tests


@pytest.mark.parametrize("better,worse", [(0, 0), (5, 0), (7, 3), (3, 7), (20, 8), (40, 40)])
def test_mcnemar_exact_p_is_the_one_sided_binomial_test(better, worse):
    expected = 1.0 if better + worse == 0 else binomtest(better, better + worse, 0.5, alternative="greater").pvalue
    assert mcnemar_exact_p(better, worse) == pytest.approx(expected, rel=1e-12)


def _pair(n: int, p_a: float, p_b: float, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    a = (rng.random(n) < p_a).astype(int)
    b = (rng.random(n) < p_b).astype(int)
    return {"t": a.tolist()}, {"t": b.tolist()}


def test_mcnemar_counts_only_discordant_items():
    a = {"x": [1, 1, 0, 0, 1], "y": [1, 0]}
    b = {"x": [1, 0, 1, 0, 0], "y": [1, 1]}
    r = paired_test(a, b, test="mcnemar")
    assert (r.better, r.worse, r.n_items) == (2, 2, 7)
    assert r.p_value == pytest.approx(binomtest(2, 4, 0.5, alternative="greater").pvalue)
    assert r.diff == pytest.approx((3 / 5 + 1 / 2) / 2 - (2 / 5 + 1.0) / 2)  # macro: the mean over tasks
    assert not r.significant


def test_bootstrap_lower_bound_matches_the_normal_approximation_for_many_items():
    a, b = _pair(4000, 0.62, 0.55, seed=1)
    r = paired_test(a, b, test="bootstrap", alpha=0.05, n_boot=4000)
    d = np.asarray(a["t"]) - np.asarray(b["t"])
    textbook = d.mean() - norm.ppf(0.95) * d.std(ddof=0) / math.sqrt(len(d))
    assert r.lower_bound == pytest.approx(textbook, abs=0.004)
    assert r.diff == pytest.approx(d.mean())
    assert r.significant


def test_margin_and_significance_both_needed():
    a, b = _pair(2000, 0.60, 0.55, seed=2)
    assert paired_test(a, b, test="mcnemar").significant
    assert not paired_test(a, b, test="mcnemar", margin=0.2).significant  # gain below the margin
    assert not paired_test(a, b, test="bootstrap", margin=0.2).significant
    same = paired_test(a, a, test="bootstrap")
    assert same.diff == 0 and not same.significant  # a model never beats itself
    few_a, few_b = {"t": [1, 1, 0, 1]}, {"t": [0, 1, 0, 1]}  # one item better of four: noise
    assert not paired_test(few_a, few_b, test="mcnemar").significant
    assert not paired_test(few_a, few_b, test="bootstrap").significant
    with pytest.raises(ValueError, match="same tasks and items"):
        paired_test({"t": [1, 0]}, {"t": [1]})


# ---------------------------------------------------------------- alias reads


class _Failing:
    def __init__(self, code: str, message: str):
        from mlflow.protos import databricks_pb2

        self.err = MlflowException(message, error_code=getattr(databricks_pb2, code))
        self.existing: list = []
        assert self.err.error_code == code

    def get_model_version_by_alias(self, name, alias):
        raise self.err

    def search_registered_models(self, filter_string):
        return self.existing


class _Forbidden(_Failing):
    """MLflow's basic-auth server: 403 on a model with no permission record (one that does not exist)."""

    def __init__(self, existing: list):
        self.err = MlflowException("API request to endpoint /api/2.0/mlflow/registered-models/alias failed with "
                                   "error code 403 != 200. Response body: 'Permission denied'")
        self.existing = existing


def test_a_403_means_no_champion_only_when_the_model_does_not_exist():
    assert version_by_alias(_Forbidden(existing=[]), "x") is None
    with pytest.raises(MlflowException, match="403"):
        version_by_alias(_Forbidden(existing=["x"]), "x")


def test_a_server_error_is_never_read_as_no_champion():
    assert version_by_alias(_Failing("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=x not found"), "x") is None
    assert version_by_alias(_Failing("INVALID_PARAMETER_VALUE", "Registered model alias champion not found."),
                            "x") is None
    with pytest.raises(MlflowException):  # a 5xx from the server: raised, not "no champion"
        version_by_alias(_Failing("INTERNAL_ERROR", "HTTP 503 Service Unavailable"), "x")
    with pytest.raises(MlflowException):
        version_by_alias(_Failing("INVALID_PARAMETER_VALUE", "bad name"), "x")


# ---------------------------------------------------------------- a real MLflow server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", (root / "art").as_uri(),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None and time.time() < deadline, (root / "server.log").read_text()[-2000:]
        time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(30)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _register(uri: str, name: str, items: dict, suite: str = "suite-1") -> int:
    """A run that logged its item scores like the evaluate step, and a version of it (client calls only: no
    process-global MLflow state from other tests can leak in)."""
    client = _client(uri)
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass
    exp = client.get_experiment_by_name("registry-tests")
    exp_id = exp.experiment_id if exp else client.create_experiment("registry-tests")
    run_id = client.create_run(exp_id).info.run_id
    client.log_dict(run_id, {"format": 2, "suite": suite, "tuned": {"items": {"acc_avg": items}}},
                    "eval/item_scores.json")
    client.set_terminated(run_id)
    v = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    return int(v.version)


def _items(n: int, right: int, offset: int = 0) -> dict:
    """n items of one task, ``right`` of them correct starting at ``offset`` (wrapping)."""
    return {"t": [1 if (i - offset) % n < right else 0 for i in range(n)]}


def test_lock_excludes_and_breaks_stale_locks(mlflow_server):
    client = _client(mlflow_server)
    with registry_lock(client, "locked-model", holder="first"):
        with pytest.raises(RegistryLockTimeout, match="locked-model.promotion-lock"):
            with registry_lock(client, "locked-model", holder="second", timeout_s=1.0):
                pass
    with registry_lock(client, "locked-model", holder="third", timeout_s=2.0):  # released: free again
        pass
    # a holder that died: its lock is older than the ttl and the next caller breaks it
    client.create_registered_model(lock_name("locked-model"), tags={"holder": "dead", "acquired_at": "0"})
    with registry_lock(client, "locked-model", holder="fourth", timeout_s=5.0, ttl_s=60):
        assert client.get_registered_model(lock_name("locked-model")).tags["holder"].startswith("fourth")


def _promote_in_process(uri, name, version, items, measured, barrier_at, queue):
    """A separate process, like a second pipeline run finishing at the same moment."""
    client = _client(uri)
    while time.time() < barrier_at:
        time.sleep(0.001)
    entry = decide_and_apply(client, uri, name, Challenger(version=version, items=items, suite="suite-1",
                                                           measured=measured, by=f"run-{version}"),
                             Policy(test="mcnemar", alpha=0.05))
    queue.put((version, entry["action"]))


def test_a_lock_released_while_the_server_checked_it_is_retried_not_raised():
    """Seen in CI: the holder deletes the lock between the server's 'exists' check and its read-back, and the
    create answers RESOURCE_DOES_NOT_EXIST; the next try must take the lock (unit test with a stand-in client)."""
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    class Client:
        def __init__(self):
            self.calls, self.deleted = 0, []

        def create_registered_model(self, name, tags=None, description=None):
            self.calls += 1
            if self.calls == 1:
                raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)
            self.tags = tags

        def get_registered_model(self, name):
            if self.calls == 1:
                raise MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST)
            return type("Held", (), {"tags": self.tags})()

        def delete_registered_model(self, name):
            self.deleted.append(name)

    client = Client()
    with registry_lock(client, "m", poll_s=0.0) as token:
        assert client.calls == 2 and token
    assert client.deleted == [lock_name("m")]
    broken = Client()
    broken.create_registered_model = lambda *a, **k: (_ for _ in ()).throw(
        MlflowException("boom", error_code=INTERNAL_ERROR))
    with pytest.raises(MlflowException, match="boom"):
        with registry_lock(broken, "m", poll_s=0.0):
            pass


@pytest.mark.parametrize("order", ["concurrent", "worse-first", "better-first"])
def test_two_challengers_finishing_together_leave_the_alias_on_the_better(mlflow_server, order):
    name = f"race-{order}"
    n = 200
    champ_items, good, better = _items(n, 100), _items(n, 130), _items(n, 170)
    v1 = _register(mlflow_server, name, champ_items)
    first = decide_and_apply(_client(mlflow_server), mlflow_server, name,
                             Challenger(version=v1, items=champ_items, suite="suite-1", by="first run"), Policy())
    assert first["promoted"] and first["reason"] == "no champion yet"
    v_good, v_better = _register(mlflow_server, name, good), _register(mlflow_server, name, better)
    # both runs measured the same champion (v1) on the same items
    measured = {"version": v1, "items": champ_items}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 8  # both processes imported and waiting
    delays = {"concurrent": (0, 0), "worse-first": (0, 3), "better-first": (3, 0)}[order]
    procs = [ctx.Process(target=_promote_in_process, args=(mlflow_server, name, v, items, measured, start + d, queue))
             for v, items, d in ((v_good, good, delays[0]), (v_better, better, delays[1]))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    actions = dict(queue.get(timeout=5) for _ in procs)
    client = _client(mlflow_server)
    assert int(version_by_alias(client, name, CHAMPION).version) == v_better
    assert actions[v_better] == "promote"
    history = read_history(client, name)
    assert [e["seq"] for e in history] == [1, 2, 3]  # append-only, no lost entry
    later = [e for e in history if e["version"] in (v_good, v_better)]
    if actions[v_good] == "promote":  # it went first and beat v1; then v_better beat it on its logged scores
        assert later[0]["version"] == v_good and later[1]["previous"] == v_good
        assert "changed during this run" in later[1]["reason"]
    else:  # v_better went first; v_good compared itself with v_better's logged scores and lost
        assert actions[v_good] == "keep" and "does not win" in history[-1]["reason"]
    decision = json.loads(client.get_model_version(name, str(v_better)).tags["champion_decision"])
    assert decision["test"]["test"] == "mcnemar" and decision["test"]["p_value"] < 0.05
    assert not client.search_registered_models(f"name = '{lock_name(name)}'")  # the lock was released


def test_no_promotion_without_a_measurement_of_the_model_it_would_replace(mlflow_server):
    name = "unmeasured"
    client = _client(mlflow_server)
    v1 = _register(mlflow_server, name, _items(50, 20), suite="old-suite")
    decide_and_apply(client, mlflow_server, name, Challenger(version=v1, items=_items(50, 20), suite="old-suite"),
                     Policy())
    v2 = _register(mlflow_server, name, _items(50, 50))
    # this run measured no champion, and v1 was scored on another suite: nothing to compare with
    e = decide_and_apply(client, mlflow_server, name, Challenger(version=v2, items=_items(50, 50), suite="suite-1"),
                         Policy())
    assert e["action"] == "keep" and "no item scores on this eval suite" in e["reason"]
    assert int(version_by_alias(client, name, CHAMPION).version) == v1


def test_manual_approval_proposes_and_a_person_promotes_and_rolls_back(mlflow_server):
    name = "approved"
    client = _client(mlflow_server)
    v1 = _register(mlflow_server, name, _items(100, 40))
    decide_and_apply(client, mlflow_server, name, Challenger(version=v1, items=_items(100, 40), suite="suite-1"),
                     Policy(approval="manual"))
    assert version_by_alias(client, name, CHAMPION) is None  # only proposed
    assert int(version_by_alias(client, name, "challenger").version) == v1
    e = set_alias_by_hand(client, name, v1, "reviewed the eval table", "alice")
    assert e["action"] == "manual" and e["by"] == "alice" and e["previous"] is None
    assert version_by_alias(client, name, "challenger") is None  # the proposal is consumed
    v2 = _register(mlflow_server, name, _items(100, 60))
    set_alias_by_hand(client, name, v2, "hotfix", "bob")
    back = rollback(client, name, "v2 regressed in production", "carol")
    assert back["version"] == v1 and back["previous"] == v2 and back["action"] == "rollback"
    assert int(version_by_alias(client, name, CHAMPION).version) == v1
    assert [e["action"] for e in read_history(client, name)] == ["propose", "manual", "manual", "rollback"]
    with pytest.raises(ValueError, match="reason"):
        set_alias_by_hand(client, name, v2, "  ", "dave")


def test_registry_cli_lists_explains_and_refuses_bad_input(mlflow_server, tmp_path, capsys):
    from pipelines import cli

    name = "cli-model"
    client = _client(mlflow_server)
    v1 = _register(mlflow_server, name, _items(100, 40))
    decide_and_apply(client, mlflow_server, name, Challenger(version=v1, items=_items(100, 40), suite="suite-1"),
                     Policy())
    config = tmp_path / "c.yaml"
    config.write_text(f"register: {{model_name: {name}, tracking_uri: '{mlflow_server}'}}\n")
    assert cli.main(["registry", "list", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"| {v1} | champion |" in out
    assert cli.main(["registry", "history", str(config)]) == 0
    assert "| 1 |" in capsys.readouterr().out
    assert cli.main(["registry", "show", str(config), str(v1)]) == 0
    assert "no champion yet" in capsys.readouterr().out
    assert cli.main(["registry", "promote", str(config), "99", "--reason", "x"]) == 2
    assert "has no version 99" in capsys.readouterr().err
    assert cli.main(["registry", "promote", str(config), str(v1)]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert cli.main(["registry", "show", str(config), "99"]) == 2  # was a traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fora: error: '{name}' has no version 99 (it has {v1})"], err
    assert cli.main(["registry", "promote", str(config), str(v1), "--alias", "Champion", "--reason", "x"]) == 2
    assert "aliases are case-sensitive" in capsys.readouterr().err
    assert set(client.get_registered_model(name).aliases) == {"champion"}  # no second alias beside it
    config.write_text(f"register: {{model_name: nothing-here, tracking_uri: '{mlflow_server}'}}\n")
    assert cli.main(["registry", "list", str(config)]) == 2
    assert "no registered model 'nothing-here'" in capsys.readouterr().err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
