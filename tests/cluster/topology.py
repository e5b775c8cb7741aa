"""The cluster topology of a real deployment, on one machine, each part a separate process reached only over
the network (loopback):

* **S3**: SeaweedFS (``weed mini``) with access keys; buckets by path-style addressing;
* **MLflow**: ``mlflow server`` with basic auth (its own user for the pipeline), SQLite backend, artifacts
  proxied to the S3 server;
* **Ray**: a head node (no CPUs for training, as in ``k8s/components/raycluster/raycluster.yaml``) and a worker node, with token
  auth, started by ``ray start`` as the Unix user ``fora-ray`` from their own install
  (``/opt/fora-cluster/venv``, what the image is on a real cluster). The pipeline's working folders are
  mode 0700 and owned by another user, so any read of a path local to the submitting process fails there
  as it would on a real cluster.

Secrets are random per topology; nothing here writes them to a file the pipeline reads. ``Topology.stop``
ends every process it started (process groups, then any process left of the ``fora-ray`` user) and is safe
to call twice; tests call it from a fixture finalizer, so it runs when a test fails too.

``make cluster-setup`` creates the user and the cluster install; ``make cluster-test`` uses this.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

RAY_USER = "fora-ray"
CLUSTER_VENV = Path(os.environ.get("FORA_CLUSTER_VENV", "/opt/fora-cluster/venv"))
PROJECT_VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 90.0, every: float = 0.5, service: Service | None = None):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RuntimeError(f"{what}: the process exited ({service.log.read_text()[-2000:]})")
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # not up yet
            last = err
        time.sleep(every)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s ({last})")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGTERM, wait: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Topology:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fora-topology-")))
    """Holds the services' data and logs (not the pipeline's files); readable by the Ray user."""
    access_key: str = field(default_factory=lambda: "fora-" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    mlflow_user: str = "fora-pipeline"
    mlflow_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    mlflow_admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ray_token: str = field(default_factory=lambda: secrets.token_hex(24))
    head_cpus: int = 0
    worker_cpus: int = 2
    s3_port: int = field(default_factory=free_port)
    mlflow_port: int = field(default_factory=free_port)
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)
    _node_count: int = 0

    # -- addresses and credentials ------------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def ray_jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def secret_values(self) -> list[str]:
        """What must never appear in a log, an MLflow param or tag, or a compiled pipeline."""
        return [self.secret_key, self.mlflow_password, self.mlflow_admin_password, self.ray_token]

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def client_env(self) -> dict[str, str]:
        """The pipeline pod's environment (what the Secrets and the ConfigMap give it on Kubernetes)."""
        return {**self.s3_env(), "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
                "MLFLOW_TRACKING_USERNAME": self.mlflow_user, "MLFLOW_TRACKING_PASSWORD": self.mlflow_password,
                "RAY_AUTH_TOKEN": self.ray_token, "RAY_ADDRESS": self.ray_jobs_address}

    # -- processes ----------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], user: str | None = None,
               cwd: Path | None = None) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"user": user, "group": user, "extra_groups": []} if user else {}
        proc = subprocess.Popen(argv, env=env, cwd=cwd or self.root, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        service = Service(name, proc, log)
        self.services[name] = service
        return service

    def start_s3(self, *extra: str) -> None:
        data = self.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        weed = shutil.which("weed") or str(PROJECT_VENV_BIN / "weed")
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        self._spawn("s3", [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                           f"-s3.port={self.s3_port}", f"-master.port={free_port()}",
                           f"-volume.port={free_port()}", f"-filer.port={free_port()}",
                           f"-admin.port={free_port()}", "-admin.ui=false", "-webdav=false",
                           "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", *extra],
                    {**base, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key})
        wait_for(lambda: self.s3().list_buckets() is not None, "the S3 server", 120, service=self.services["s3"])

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=3, read_timeout=30,
                                          retries={"max_attempts": 1}))

    def start_mlflow(self, artifacts_bucket: str = "fora-mlflow") -> None:
        with_bucket = self.s3()
        if artifacts_bucket not in {b["Name"] for b in with_bucket.list_buckets().get("Buckets", [])}:
            with_bucket.create_bucket(Bucket=artifacts_bucket)
        folder = self.root / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        ini = folder / "basic_auth.ini"
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root), "LANG": "C.UTF-8",
               **self.s3_env(), "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint, "MLFLOW_AUTH_CONFIG_PATH": str(ini),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.mlflow_admin_password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        self._spawn("mlflow", [str(PROJECT_VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth",
                               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", f"s3://{artifacts_bucket}/artifacts",
                               "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1"], env)
        self.wait_mlflow()
        admin = ("admin", self.mlflow_admin_password)
        r = requests.get(f"{self.mlflow_uri}/api/2.0/mlflow/users/get", params={"username": self.mlflow_user},
                         auth=admin, timeout=10)
        if r.status_code != 200:
            requests.post(f"{self.mlflow_uri}/api/2.0/mlflow/users/create", auth=admin, timeout=10,
                          json={"username": self.mlflow_user, "password": self.mlflow_password}).raise_for_status()

    def wait_mlflow(self) -> None:
        wait_for(lambda: requests.get(f"{self.mlflow_uri}/health", timeout=2).status_code == 200, "MLflow", 120,
                 service=self.services["mlflow"])

    def stop_mlflow(self) -> None:
        self.services["mlflow"].kill()

    def restart_mlflow(self) -> None:
        """The same server again (same port, database and artifact store), as after a pod restart."""
        if not self.services["mlflow"].alive():
            self.start_mlflow()

    def _ray_env(self) -> dict[str, str]:
        home = self.root / "ray-home"
        return {"PATH": f"{CLUSTER_VENV / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.ray_token, "FORA_CACHE": str(home / "cache"),
                "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "FORA_RAY_DASHBOARD": "0", "TMPDIR": str(home / "tmp"),
                **self.s3_env(),
                "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint, "MLFLOW_TRACKING_USERNAME": self.mlflow_user,
                "MLFLOW_TRACKING_PASSWORD": self.mlflow_password}

    def _ray_start(self, name: str, args: list[str]) -> Service:
        home = self.root / "ray-home"
        (home / "tmp").mkdir(parents=True, exist_ok=True)  # the nodes' own /tmp, as in their pods
        for folder in (home, home / "tmp"):
            shutil.chown(folder, RAY_USER, RAY_USER)
        self._node_count += 1
        base = 21000 + 1000 * self._node_count
        return self._spawn(name, [str(CLUSTER_VENV / "bin" / "ray"), "start", "--block", "--disable-usage-stats",
                                  "--node-ip-address=127.0.0.1",
                                  f"--temp-dir={home / f'r{self._node_count}'}",  # per node; short: Unix socket paths
                                  "--object-store-memory=300000000", f"--dashboard-agent-listen-port={free_port()}",
                                  f"--min-worker-port={base}", f"--max-worker-port={base + 999}", *args],
                           self._ray_env(), user=RAY_USER, cwd=home)

    def start_ray(self) -> None:
        head = self._ray_start("ray-head", ["--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                                     "--dashboard-host=127.0.0.1", f"--num-cpus={self.head_cpus}",
                                     f"--ray-client-server-port={free_port()}"])
        wait_for(lambda: requests.get(f"{self.ray_jobs_address}/api/version", timeout=2).status_code == 401,
                 "the Ray head's Jobs API", 120, service=head)
        self.start_ray_worker()

    def start_ray_worker(self, name: str = "ray-worker") -> Service:
        node = self._ray_start(name, [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={self.worker_cpus}"])
        wait_for(lambda: self.ray_cpus() >= self.head_cpus + self.worker_cpus, "the Ray worker node", 120,
                 service=node)
        return node

    def ray_cpus(self) -> float:
        r = requests.get(f"{self.ray_jobs_address}/api/cluster_status", timeout=5,
                         headers={"Authorization": f"Bearer {self.ray_token}"})
        r.raise_for_status()
        data = r.json().get("data", {}).get("clusterStatus", {})
        usage = (data.get("loadMetricsReport") or {}).get("usage", {})
        return float(usage.get("CPU", [0, 0])[1]) if usage else 0.0

    def kill_ray_worker(self, name: str = "ray-worker") -> None:
        """Kill the worker node's raylet and every worker process on it (a node lost)."""
        self.services[name].kill(signal.SIGKILL)

    def start(self) -> Topology:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.start_s3()
        self.start_mlflow()
        self.start_ray()
        return self

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.kill()
        if self._node_count:  # anything this topology's Ray nodes left behind (not another topology's)
            for pid in self._ray_user_pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.services.clear()

    def _ray_user_pids(self) -> list[int]:
        """Processes of the Ray user started for this topology (their HOME is this topology's ray-home)."""
        import pwd

        uid, mine = pwd.getpwnam(RAY_USER).pw_uid, f"HOME={self.root / 'ray-home'}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if proc.stat().st_uid == uid and mine in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
        return pids

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def private_workdir(prefix: str = "fora-pipeline-") -> Path:
    """A folder only this process's user can open (mode 0700): the pipeline's working files."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)
    return path
