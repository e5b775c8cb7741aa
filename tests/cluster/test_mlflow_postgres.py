"""MLflow on PostgreSQL as ``k8s/components/mlflow-postgres`` runs it: a real PostgreSQL server (Debian's, as the
unprivileged user fora-ray, password auth on loopback) with the two databases, and a real ``mlflow server``
started with the rendered Deployment's exact arguments (4 workers, both database URIs from the Secret's keys as
``k8s/examples/optional/mlflow-db.example.yaml`` has them). Concurrent writers all land, in PostgreSQL, not SQLite."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from k8s_render import K8S, free_port, mlflow_from_render, overlay, render_with_any  # noqa: E402

pytestmark = pytest.mark.cluster
USER = "fora-ray"  # cluster-setup's unprivileged user: PostgreSQL refuses to run as root


def _as_user(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", USER, "--", *argv], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def postgres():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is not installed: `make cluster-setup` installs Debian's postgresql"
    bin_dir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="fora-postgres-"))  # pytest's tmp folders are root's alone
    os.chmod(root, 0o777)
    data, socket_dir = root / "data", root / "sock"
    password = secrets.token_hex(12)
    (root / "pw").write_text(password)
    os.chmod(root / "pw", 0o644)
    socket_dir.mkdir()
    os.chmod(socket_dir, 0o777)  # mkdir's mode is cut by the umask
    _as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
              f"--pwfile={root / 'pw'}"])
    port = free_port()
    server = subprocess.Popen(["runuser", "-u", USER, "--", str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
                               "-k", str(socket_dir), "-c", "listen_addresses=127.0.0.1"],
                              stdout=(root / "log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    env = {**os.environ, "PGPASSWORD": password}
    psql = [shutil.which("psql") or str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-v", "ON_ERROR_STOP=1"]
    deadline = time.monotonic() + 60
    while subprocess.run([*psql, "-c", "select 1"], env=env, capture_output=True).returncode != 0:
        assert server.poll() is None and time.monotonic() < deadline, (root / "log").read_text()[-2000:]
        time.sleep(0.5)
    for sql in (f"create role mlflow login password '{password}'", "create database mlflow owner mlflow",
                "create database mlflow_auth owner mlflow"):
        subprocess.run([*psql, "-c", sql], env=env, check=True, capture_output=True)
    try:
        yield {"port": port, "password": password, "psql": psql, "env": env}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_mlflow_with_the_postgres_component_takes_concurrent_writers(postgres, tmp_path):
    ns = f"team-{uuid.uuid4().hex[:6]}"
    docs = render_with_any(overlay(tmp_path, ns, ["mlflow-postgres"]))
    example = yaml.safe_load((K8S / "examples" / "optional" / "mlflow-db.example.yaml").read_text())["stringData"]
    real = f"mlflow:{postgres['password']}@127.0.0.1:{postgres['port']}"
    secret = {k: v.replace("mlflow:replace-me@postgres.example.internal:5432", real) for k, v in example.items()}
    assert real in secret["backend_store_uri"] and real in secret["basic_auth.ini"]
    env_in_pod = {"POD_NAMESPACE": ns, "MLFLOW_BACKEND_STORE_URI": secret["backend_store_uri"]}
    with mlflow_from_render(docs, tmp_path, env_in_pod, {"auth-config/basic_auth.ini": secret["basic_auth.ini"]}) \
            as (url, admin_password):
        auth = ("admin", admin_password)

        def create(i: int) -> int:
            return requests.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": f"concurrent-{i}"},
                                 headers={"Host": "mlflow:5000"}, auth=auth, timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(24)))
        assert codes == [200] * 24
        found = requests.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 100},
                             headers={"Host": "mlflow:5000"}, auth=auth, timeout=60).json()["experiments"]
        assert {f"concurrent-{i}" for i in range(24)} <= {e["name"] for e in found}
    # the rows are in PostgreSQL: the tracking store and the auth store
    count = subprocess.run([*postgres["psql"], "-d", "mlflow", "-tAc",
                            "select count(*) from experiments where name like 'concurrent-%'"],
                           env=postgres["env"], check=True, capture_output=True, text=True).stdout.strip()
    assert count == "24"
    users = subprocess.run([*postgres["psql"], "-d", "mlflow_auth", "-tAc", "select username from users"],
                           env=postgres["env"], check=True, capture_output=True, text=True).stdout.split()
    assert "admin" in users
    assert not list(tmp_path.glob("backend/*.db"))  # nothing fell back to SQLite
