"""``make cluster-test``: the pipeline against the topology of a real deployment, every part a separate process
reached over the network (``topology.py``): a SeaweedFS S3 server, an MLflow server with basic auth and
artifacts on S3, and a two-node Ray cluster with token auth running as another Unix user from its own
install. The pipeline's working folders are mode 0700, so the Ray nodes cannot read them.

What is asserted: the whole DAG on the local KFP runner puts data, Fisher report, checkpoints, adapter and
model in S3, trains as a Ray job on the cluster's worker node, logs every step to one MLflow run and
registers a champion; a worker node killed mid-training (with the MLflow server down meanwhile) resumes
from its S3 checkpoint with no step lost or repeated; a cancelled step stops its Ray job and a retry
resumes; the sweep runs as a Ray job with Tune's state on S3; wrong keys, an unreachable or refusing Ray,
an MLflow server that is down or refuses, and a GPU that is not there each end in one line; no
credential appears in any log, MLflow param or tag, or compiled pipeline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from topology import Topology, free_port, private_workdir, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
FORA = str(ROOT / ".venv" / "bin" / "fora")
BUCKET = "fora-test"
MODEL_URI = f"s3://{BUCKET}/models/tiny-llama"
DATA_URI = f"s3://{BUCKET}/data/records.json"


@pytest.fixture(scope="module")
def topo():
    topology = Topology()
    try:
        topology.start()
        topology.s3().create_bucket(Bucket=BUCKET)
        yield topology
    finally:
        logs = topology.root / "logs"
        topology.stop()
        print(f"service logs: {logs}")


@pytest.fixture(scope="module")
def env(topo):
    """This process as a pipeline pod: credentials and addresses in the environment (what the Secrets and
    the fora-services ConfigMap give it on Kubernetes)."""
    saved = dict(os.environ)
    os.environ.update(topo.client_env())
    os.environ.pop("RAY_AUTH_MODE", None)
    os.environ["FORA_CACHE"] = str(private_workdir("fora-cache-"))
    try:
        yield dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def inputs(topo, tmp_path_factory):
    """A tiny model and a records file, uploaded to S3: the cluster reads nothing from this machine's disk."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pipeline_fixtures import tiny_model_dir, write_records

    local = tmp_path_factory.mktemp("inputs")
    model = tiny_model_dir(local)
    records = write_records(local / "records.json", 48)
    s3 = topo.s3()
    for path in model.iterdir():
        s3.upload_file(str(path), BUCKET, f"models/tiny-llama/{path.name}")
    s3.upload_file(str(records), BUCKET, "data/records.json")
    return {"model": MODEL_URI, "data": DATA_URI}


def config(topo: Topology, workdir: Path, name: str, **train) -> dict:
    return {"name": name, "model": MODEL_URI, "output_dir": str(workdir / "out"),
            "data": {"source": DATA_URI, "max_train": 40, "max_validation": 4, "calibration_size": 8},
            "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": 6, "batch_size": 4, "checkpoint_every": 2, "eval_every": 3,
                      "cpus_per_worker": 1, "max_failures": 3, **train},
            "eval": {"tasks": ["arc_easy"], "limit": 4, "batch_size": 4},
            "register": {"model_name": f"{name}-model", "tracking_uri": topo.mlflow_uri},
            "storage": {"uri": f"s3://{BUCKET}/pipeline"},
            "ray": {"placement_timeout_s": 60, "job_poll_s": 1.0},
            "serve": {"artifacts_destination": "s3://fora-mlflow/artifacts"}}  # topology.py's --artifacts-destination


def write_config(workdir: Path, cfg: dict) -> Path:
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fora(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([FORA, *args], env=env or os.environ.copy(), capture_output=True, text=True,
                          timeout=timeout)


def keys(topo: Topology, bucket: str, prefix: str = "") -> list[str]:
    pages = topo.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def jobs(topo: Topology):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(topo.ray_jobs_address, headers={"Authorization": f"Bearer {topo.ray_token}"})


def ray_nodes(topo: Topology) -> dict[str, bool]:
    """{node id: is head} from the dashboard's state API."""
    import requests

    r = requests.get(f"{topo.ray_jobs_address}/api/v0/nodes", timeout=10,
                     headers={"Authorization": f"Bearer {topo.ray_token}"})
    r.raise_for_status()
    return {n["node_id"]: n["is_head_node"] for n in r.json()["data"]["result"]["result"]}


def latest_step(topo: Topology, prefix: str) -> int:
    steps = [0]
    for key in keys(topo, BUCKET, prefix):
        if key.endswith("fora_checkpoint.json"):
            steps.append(json.loads(topo.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read())["step"])
    return max(steps)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("fora: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


# -- the whole DAG --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dag(topo, env, inputs, tmp_path_factory):
    """The compiled DAG on the local KFP runner, pointed at the services (run once for several tests)."""
    from pipelines.config.overrides import join_overrides
    from pipelines.kubeflow.local_runner import run_on_kfp_local

    workdir = private_workdir()
    cfg = config(topo, workdir, "cluster-dag")
    typed = ["eval.tasks=[arc_easy, boolq]", "train.eval_every=3"]  # R7: a list override reaches the pods
    result = run_on_kfp_local(yaml.safe_dump(cfg), overrides=join_overrides(typed),
                              pipeline_root=workdir / "kfp")
    return {"workdir": workdir, "config": cfg, "result": result, "root": Path(result["outputs_root"])}


def test_whole_dag_hands_everything_over_through_s3_and_trains_on_the_cluster(topo, dag):
    from mlflow.tracking import MlflowClient

    root = dag["root"]
    assert (root / "register" / "merged" / "config.json").exists()
    train_meta = json.loads((root / "train" / "executor_output.json").read_text())
    adapter_meta = train_meta["artifacts"]["adapter"]["artifacts"][0]["metadata"]
    namespace = adapter_meta["checkpoints"]
    job_id = adapter_meta["ray_job"]
    assert namespace.startswith(f"s3://{BUCKET}/pipeline/checkpoints/cluster-dag/")
    # the data, the Fisher report, the checkpoints and the adapter are objects in S3
    staged = keys(topo, BUCKET, "pipeline/cluster-dag/")
    assert any(k.endswith("inputs/data/train.jsonl") for k in staged), staged
    assert any(k.endswith("inputs/calibration/fisher_report.json") for k in staged), staged
    assert any(k.endswith("train/adapter/adapter_model.safetensors") for k in staged), staged
    ckpt_prefix = namespace[len(f"s3://{BUCKET}/"):]
    ckpts = keys(topo, BUCKET, ckpt_prefix)
    assert sum(k.endswith("adapter/adapter_model.safetensors") for k in ckpts) == 2  # num_to_keep
    assert latest_step(topo, ckpt_prefix) == 6
    # the model and its artifacts went through the MLflow server into the S3 bucket behind it
    mlflow_keys = keys(topo, "fora-mlflow")
    assert any(k.endswith("model.safetensors") for k in mlflow_keys), mlflow_keys[:20]
    assert any(k.endswith("MLmodel") for k in mlflow_keys)
    assert not any(k.endswith(".pkl") for k in mlflow_keys)  # R2: no pickle in the registered model

    # the Ray job ran on the cluster's worker node, from URIs only (the pipeline's folders are 0700)
    info = jobs(topo).get_job_info(job_id)
    assert str(info.status) == "SUCCEEDED"
    assert str(dag["workdir"]) not in info.entrypoint and "s3://" in info.entrypoint
    log = jobs(topo).get_job_logs(job_id)
    node = re.search(r"training worker 0/1 on Ray node (\w+)", log).group(1)
    assert ray_nodes(topo)[node] is False, "training ran on the head node"
    assert "step 6/6" in log

    # one MLflow run holds every step's metrics and artifacts; a version is registered and champion
    client = MlflowClient(topo.mlflow_uri)
    exp = client.get_experiment_by_name("fora")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert {"data/train", "train/loss", "base/acc_avg", "tuned/acc_avg", "acc_avg"} <= set(run.data.metrics)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [1, 2, 3, 4, 5, 6]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"data", "calibration", "eval", "adapter"}
    assert run.data.params["eval.tasks"] == "['arc_easy', 'boolq']"  # the override arrived as typed
    version = client.get_model_version_by_alias("cluster-dag-model", "champion")
    assert version.version == "1" and version.run_id == run.info.run_id

    # the deploy step's InferenceService reads the champion's transformers folder from the bucket behind the
    # MLflow server: its storageUri is a real S3 prefix holding the merged model
    isvc = yaml.safe_load((root / "deploy" / "inference_service").read_text())
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith("s3://fora-mlflow/artifacts/"), uri
    served = set(keys(topo, "fora-mlflow", uri.removeprefix("s3://fora-mlflow/").rstrip("/") + "/"))
    assert {k.rsplit("/", 1)[-1] for k in served} >= {"config.json", "model.safetensors"}, served


def test_no_credential_in_logs_params_tags_or_compiled_yaml(topo, dag, capfd, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.config.run_config import parse_run_config
    from pipelines.kubeflow.fora_pipeline import compile_pipeline

    texts = {"captured output": "".join(capfd.readouterr())}
    for path in dag["root"].rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000 and path.suffix in ("", ".json", ".md", ".txt", ".log"):
            texts[str(path)] = path.read_text(errors="replace")
    client = MlflowClient(topo.mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("fora").experiment_id])[0]
    texts["mlflow params"] = json.dumps(run.data.params)
    texts["mlflow tags"] = json.dumps(run.data.tags)
    version = client.get_model_version("cluster-dag-model", "1")
    texts["version tags"] = json.dumps(version.tags)
    for job in jobs(topo).list_jobs():
        texts[f"ray job {job.submission_id}"] = jobs(topo).get_job_logs(job.submission_id) + json.dumps(
            {"entrypoint": job.entrypoint, "metadata": job.metadata, "runtime_env": job.runtime_env})
    for key in keys(topo, BUCKET, "pipeline/"):
        if key.endswith((".yaml", ".json")):
            texts[f"s3://{BUCKET}/{key}"] = topo.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    run_cfg = parse_run_config(yaml.safe_dump(dag["config"]))
    texts["compiled pipeline"] = compile_pipeline(tmp_path / "p.yaml", run=run_cfg).read_text()
    for name, text in texts.items():
        for secret in topo.secret_values:
            assert secret not in text, f"a credential appears in {name}"
    assert len(texts) > 20


# -- faults ---------------------------------------------------------------------------------------------
def _prepared(topo, env, name: str, sweep: dict | None = None, **train) -> tuple[Path, Path]:
    """Data prep and calibration of a small run, done here: (workdir, config path)."""
    workdir = private_workdir()
    cfg = config(topo, workdir, name, **train)
    if sweep:
        cfg["sweep"] = sweep
    path = write_config(workdir, cfg)
    for step in ("data-prep", "calibrate"):
        done = fora(step, str(path), "--quiet")
        assert done.returncode == 0, done.stderr[-3000:]
    return workdir, path


def test_two_workers_on_two_ray_nodes_equal_one_worker(topo, env, inputs):
    """Data-parallel across nodes: a second worker node joins, two training workers are placed one per node
    (STRICT_SPREAD), talk gloo over the network, hold bit-identical adapters after every step, and end where
    one worker in this process ends at the same global batch (the one-node version: tests/test_data_parallel.py)."""
    from pipelines.config.run_config import load_run_config
    from pipelines.steps.train import run_training
    from pipelines.training.calibration_artifacts import load_selection

    topo.start_ray_worker("ray-worker-ddp")
    try:
        wait_for(lambda: sum(not head for head in ray_nodes(topo).values()) >= 2, "a second worker node", 60, 0.5)
        workdir, path = _prepared(topo, env, "cluster-ddp", max_steps=6, eval_every=1, batch_size=2, num_workers=2,
                                  placement_strategy="STRICT_SPREAD", warmup_steps=1, lr=5e-3)
        layers = load_selection(workdir / "out" / "calibration")[1]
        done = fora("train", str(path))  # a Ray job on the cluster; its log streamed here
        printed = done.stdout + done.stderr
        assert done.returncode == 0, printed[-3000:]
        nodes = set(re.findall(r"training worker \d/2 on Ray node (\w+)", printed))
        assert len(nodes) == 2, printed[-3000:]
        assert all(not ray_nodes(topo).get(n, True) for n in nodes)  # worker nodes, not the head
        history = json.loads((workdir / "out" / "train" / "history.json").read_text())
        assert [h["replica_spread"] for h in history] == [0.0] * 6
        one = load_run_config(path, ["train.use_ray=false", "train.num_workers=1", "train.batch_size=4",
                                     f"train.checkpoint_dir={workdir / 'one-ckpt'}"])
        ref = run_training(one, workdir / "out" / "data", layers, workdir / "one")
        ref_history = json.loads((workdir / "one" / "history.json").read_text())
        for h, r in zip(history, ref_history, strict=True):
            assert abs(h["loss"] - r["loss"]) <= 1e-5 * max(1.0, abs(r["loss"])), (h, r)
        a = load_file(str(workdir / "out" / "train" / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(Path(ref["adapter_dir"]) / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=0, atol=2e-5), (k, (a[k] - b[k]).abs().max())
    finally:
        topo.services["ray-worker-ddp"].kill()


def test_worker_node_lost_and_mlflow_down_mid_training_resume_from_s3(topo, env, inputs):
    from mlflow.tracking import MlflowClient

    from pipelines.config.run_config import load_run_config
    from pipelines.runtime import checkpoints
    from pipelines.steps.train import run_training
    from pipelines.training.calibration_artifacts import load_selection

    workdir, path = _prepared(topo, env, "cluster-kill", max_steps=40, checkpoint_every=4, eval_every=20,
                              batch_size=8)
    client = MlflowClient(topo.mlflow_uri)
    exp = client.get_experiment_by_name("fora") or client.get_experiment(client.create_experiment("fora"))
    mlflow_run = client.create_run(exp.experiment_id, run_name="kill-test").info.run_id
    proc = subprocess.Popen([FORA, "train", str(path), "--run-key", "kill-1", "--mlflow-run-id", mlflow_run,
                             "--quiet"], env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    prefix = "pipeline/checkpoints/cluster-kill/"
    wait_for(lambda: latest_step(topo, prefix) >= 8, "a checkpoint at step 8", 240, 0.3)
    killed_after = latest_step(topo, prefix)
    topo.kill_ray_worker()              # the node that runs the training worker is lost
    topo.stop_mlflow()                  # and the tracking server goes down meanwhile
    topo.start_ray_worker("ray-worker-replacement")   # Kubernetes replaces the node
    time.sleep(3)
    topo.restart_mlflow()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert killed_after < 40
    history = json.loads((workdir / "out" / "train" / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 41))  # no step lost or repeated
    resumed = [int(m) for m in re.findall(r"resumed at step (\d+) of 40", out)]
    # from an S3 checkpoint: the newest one seen, or the one before when the node died while Ray Train was
    # still registering the newest (its files were in S3 before the report reached the controller)
    assert resumed and max(4, killed_after - 4) <= resumed[-1] < 40, (killed_after, out[-4000:])

    # the same adapter as an uninterrupted run (in this process, no Ray, same data and layers)
    layers = load_selection(workdir / "out" / "calibration")[1]
    straight = load_run_config(path, ["train.use_ray=false", f"train.checkpoint_dir={workdir / 'ref-ckpt'}"])
    ref = run_training(straight, workdir / "out" / "data", layers, workdir / "ref")
    a = load_file(str(Path(ref["adapter_dir"]) / "adapter_model.safetensors"))
    b = load_file(str(workdir / "out" / "train" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # R8: the metrics of the outage reached MLflow once it was back (buffered, never failing training)
    steps = {m.step for m in client.get_metric_history(mlflow_run, "train/loss")}
    assert steps == set(range(1, 41)), sorted(set(range(1, 41)) - steps)
    assert checkpoints.safe_key("kill-1") in (workdir / "out" / "train" / "train_summary.json").read_text()


def test_cancelled_step_stops_its_ray_job_and_a_retry_resumes(topo, env, inputs):
    workdir, path = _prepared(topo, env, "cluster-cancel", max_steps=40, checkpoint_every=4, eval_every=20,
                              batch_size=8)
    argv = [FORA, "train", str(path), "--run-key", "cancel-1", "--quiet"]
    proc = subprocess.Popen(argv, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prefix = "pipeline/checkpoints/cluster-cancel/"
    wait_for(lambda: latest_step(topo, prefix) >= 4, "a checkpoint at step 4", 240, 0.3)
    proc.send_signal(signal.SIGTERM)     # the KFP run is cancelled: the pod gets SIGTERM
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "stopped Ray job fora-train-cluster-cancel-cancel-1" in out
    assert str(jobs(topo).get_job_info("fora-train-cluster-cancel-cancel-1").status) == "STOPPED"
    stopped_at = latest_step(topo, prefix)
    time.sleep(5)
    assert latest_step(topo, prefix) == stopped_at < 40  # nothing trains on after the step was cancelled

    retry = fora("train", str(path), "--run-key", "cancel-1", "--quiet")   # KFP retries the step
    assert retry.returncode == 0, retry.stderr[-4000:]
    assert "submitting fora-train-cluster-cancel-cancel-1-2" in retry.stderr
    assert re.search(rf"resumed at step {stopped_at} of 40", retry.stderr), retry.stderr[-4000:]
    history = json.loads((workdir / "out" / "train" / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 41))


def test_sweep_runs_as_a_ray_job_with_tune_state_on_s3(topo, env, inputs):
    from mlflow.tracking import MlflowClient

    # fg-filet: the trials on the worker node read FILet's energies from the calibration staged to S3
    workdir, path = _prepared(topo, env, "cluster-sweep", sweep={"methods": ["fg-filet"]}, max_steps=4,
                              eval_every=2, checkpoint_every=2)
    client = MlflowClient(topo.mlflow_uri)
    exp = client.get_experiment_by_name("fora") or client.get_experiment(client.create_experiment("fora"))
    parent = client.create_run(exp.experiment_id, run_name="sweep-test").info.run_id
    result = fora("sweep", str(path), "--set", "sweep.layer_budgets=[1, 2]", "--set", "sweep.lr=[0.001]",
                  "--set", "sweep.scheduler=fifo", "--set", "sweep.max_trials=2",
                  "--data", str(workdir / "out" / "data"), "--calibration", str(workdir / "out" / "calibration"),
                  "--out", str(workdir / "sweep"), "--mlflow-run-id", parent, "--run-key", "sweep-1")
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((workdir / "sweep" / "sweep_summary.json").read_text())
    assert summary["finished_trials"] == 2 and summary["job"] == "fora-sweep-cluster-sweep-sweep-1"
    assert {r["method"] for r in summary["results"]} == {"fg-filet"}
    assert (workdir / "sweep" / "best" / "adapter" / "adapter_model.safetensors").exists()
    state = keys(topo, BUCKET, "pipeline/cluster-sweep/sweep-1/sweep/")
    assert any("/tune/experiment/" in k for k in state)           # a retried pod restores Tune from here
    assert sum(k.endswith("adapter/adapter_model.safetensors") for k in state) >= 2   # trials' checkpoints
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 2


def test_wrong_s3_keys_are_one_line_naming_endpoint_and_bucket(topo, env, inputs):
    workdir = private_workdir()
    path = write_config(workdir, config(topo, workdir, "cluster-keys"))
    bad = {**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-key"}
    line = one_line(fora("data-prep", str(path), env=bad))
    assert f"127.0.0.1:{topo.s3_port}" in line and f"bucket '{BUCKET}'" in line
    assert "not-the-key" not in line


def test_unreachable_or_refusing_ray_is_one_line(topo, env, inputs):
    workdir, path = _prepared(topo, env, "cluster-noray")
    nowhere = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    line = one_line(fora("train", str(path), env={**os.environ, "RAY_ADDRESS": nowhere}))
    assert f"cannot reach the Ray cluster's Jobs API at {nowhere}" in line and time.monotonic() - t < 60
    no_token = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    line = one_line(fora("train", str(path), env=no_token))
    assert "refused the request (401" in line and "RAY_AUTH_TOKEN" in line


def test_the_token_reaches_rays_job_api_as_kuberay_sends_it(topo):
    """KubeRay >= 1.6 with `authOptions` polls job status with `x-ray-authorization: Bearer <auth_token>`
    (ray-operator/controllers/ray/utils/dashboardclient/dashboard_httpclient.go); the head (started with
    RAY_AUTH_MODE=token, as KubeRay starts it) must accept that header and refuse a request without it or with
    another token, or the operator would mark every RayJob failed."""
    import requests

    url = f"{topo.ray_jobs_address}/api/jobs/"
    assert requests.get(url, headers={"x-ray-authorization": f"Bearer {topo.ray_token}"}, timeout=15).status_code == 200
    assert requests.get(url, timeout=15).status_code == 401
    assert requests.get(url, headers={"x-ray-authorization": "Bearer not-the-token"}, timeout=15).status_code in (401, 403)
    # what the pipeline's steps send (pipelines/runtime/ray_jobs.py), from the same Secret key
    assert requests.get(url, headers={"Authorization": f"Bearer {topo.ray_token}"}, timeout=15).status_code == 200


def test_gpu_that_is_not_there_fails_fast_on_the_cluster(topo, env, inputs):
    workdir, path = _prepared(topo, env, "cluster-gpu")
    t = time.monotonic()
    result = fora("train", str(path), "--set", "train.use_gpu=true", "--set", "ray.placement_timeout_s=5",
                  "--run-key", "gpu-1")
    assert result.returncode == 1
    line = one_line(result)
    assert "could not place 1 training worker(s) of CPU 1, GPU 1" in line and "train.use_gpu: false" in line
    assert time.monotonic() - t < 120


def test_mlflow_down_or_refusing_is_one_line_and_registers_nothing(topo, env, dag):
    from mlflow.tracking import MlflowClient

    workdir = dag["workdir"]
    root = dag["root"]
    cfg = {**dag["config"], "register": {**dag["config"]["register"], "model_name": "never-registered"}}
    path = write_config(workdir, cfg)
    argv = ["register", str(path), "--data", str(root / "data-prep" / "data"),
            "--calibration", str(root / "calibrate" / "calibration"), "--adapter", str(root / "train" / "adapter"),
            "--eval", str(root / "evaluate" / "evaluation"), "--out", str(workdir / "merged-again")]
    refused = one_line(fora(*argv, env={**os.environ, "MLFLOW_TRACKING_PASSWORD": "wrong-password-123"}))
    assert f"the MLflow server at {topo.mlflow_uri} refused" in refused and "wrong-password" not in refused
    topo.stop_mlflow()
    try:
        t = time.monotonic()
        down = one_line(fora(*argv))
        assert f"cannot reach the MLflow server at {topo.mlflow_uri}" in down and time.monotonic() - t < 60
    finally:
        topo.restart_mlflow()
    assert MlflowClient(topo.mlflow_uri).search_registered_models("name = 'never-registered'") == []
    assert not (workdir / "merged-again").exists()
