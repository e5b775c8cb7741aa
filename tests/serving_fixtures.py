"""``mlflow models serve`` as a separate process reached over HTTP, for the serving tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def serve_model(model_uri: str, tracking_uri: str, port: int) -> subprocess.Popen:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1:``port``, a separate process (stop it with terminate)."""
    # as in an activated virtual environment: mlflow starts the `uvicorn` beside its Python
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                             "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ask_server(port: int, server: subprocess.Popen, body: dict, timeout_s: float = 120) -> dict:
    """POST ``body`` to /invocations once /ping answers (or the server exits: its stderr in the failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())
