"""The cluster path's costs, each against a baseline measured in the same run (``make bench-cluster``):

1. Seconds from the train step's start to its first training step: Ray Train inside the step's pod (the
   default) vs a Ray job on a two-node cluster (``tests/cluster/topology.py``: S3, MLflow and Ray as separate
   services, the Ray nodes as another Unix user). Cold (first use of the model on the node) and warm.
2. Checkpoint save and restore through S3 (SeaweedFS, pyarrow's S3 filesystem, what Ray Train writes with)
   vs local disk, for the default adapter (SmolLM2-135M, rank 32, K = 15 of 30 layers, with its Adam state),
   and the share of the default 60-step run (a checkpoint every 20 steps) spent on checkpoint I/O.
3. The sweep on the two-node cluster (1 CPU per node): where its trials' workers ran, and the overhead share
   (1 - time in trial steps / (Tune wall time x concurrent trials)), as the sweep summary computes it.

Needs ``make cluster-setup`` (root). Run alone on the machine:

    python benchmarks/bench_cluster.py [--only io,start,sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402
from topology import Topology  # noqa: E402

from pipelines.config.run_config import RunConfig  # noqa: E402
from pipelines.runtime import storage  # noqa: E402
from pipelines.steps import stages  # noqa: E402
from pipelines.sweep.driver import sweep_trials  # noqa: E402

BUCKET = "fora-bench"
DEFAULT = RunConfig.from_dict(__import__("yaml").safe_load((ROOT / "configs" / "default.yaml").read_text()))


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# -- 2. checkpoint I/O --------------------------------------------------------------------------------
def checkpoint_io(repeat: int) -> dict:
    import pyarrow.fs as pafs

    from fora_core import ModelSource, apply_fora, create_fora_optimizer
    from pipelines.training.checkpoint_state import load_trainer_state, save_checkpoint
    from pipelines.training.loop_config import LoopConfig
    from pipelines.training.outputs import ADAPTER_DIR
    from pipelines.training.setup import lr_lambda

    run = DEFAULT
    model, tok = ModelSource(run.model).load()
    layers = list(range(0, 30, 2))  # K = 15 of 30, as the default's layer_budget 0.5 selects
    model = apply_fora(model, layers, run.fora)
    opt = create_fora_optimizer(model, run.fora, lr=run.train.lr, stiefel_lr=run.train.stiefel_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(run.train.warmup_steps, run.train.max_steps))
    batch = torch.randint(0, tok.vocab_size, (run.train.batch_size, 128))
    torch.set_num_threads(os.cpu_count() or 1)
    step_times = []
    for _ in range(4):  # real Adam state to save, and the default's step time on this machine
        t0 = time.perf_counter()
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        step_times.append(time.perf_counter() - t0)
    step_s = statistics.median(step_times[1:])
    loop = LoopConfig(run=run, data_dir="", layers=layers, fingerprint="bench", run_key="bench")
    scratch = Path(tempfile.mkdtemp(prefix="fora-bench-ckpt-"))
    src = scratch / "ckpt"
    src.mkdir()
    serialize_s = median_s(lambda: save_checkpoint(src, model, loop, opt, sched, 4, []), repeat)
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    local_fs = pafs.LocalFileSystem()
    s3_path, s3_fs = storage.ray_storage(f"s3://{BUCKET}/ckpt")
    figures = {"step_s": step_s, "serialize_s": serialize_s, "bytes": size}
    for name, fs, dest in (("local", local_fs, str(scratch / "storage")), ("s3", s3_fs, s3_path)):
        def persist(fs=fs, dest=dest):
            pafs.copy_files(str(src), f"{dest}/checkpoint", destination_filesystem=fs)

        def restore(fs=fs, dest=dest, name=name):
            back = scratch / f"back-{name}"
            pafs.copy_files(f"{dest}/checkpoint", str(back), source_filesystem=fs,
                            destination_filesystem=local_fs)
            load_trainer_state(back, "bench")
            from safetensors.torch import load_file

            load_file(str(back / ADAPTER_DIR / "adapter_model.safetensors"))
        figures[f"{name}_persist_s"] = median_s(persist, repeat)
        figures[f"{name}_restore_s"] = median_s(restore, repeat)
    n_ckpt = -(-run.train.max_steps // run.train.checkpoint_every)
    for name in ("local", "s3"):
        io = n_ckpt * (serialize_s + figures[f"{name}_persist_s"])
        figures[f"{name}_share"] = io / (run.train.max_steps * step_s + io)
    figures["checkpoints"] = n_ckpt
    return figures


# -- 1. start -> first step -------------------------------------------------------------------------------
def start_to_first_step(topo: Topology, root: Path) -> dict:
    base = {"name": "bench-start", "model": "smollm2-135m", "output_dir": str(root / "out"),
            "data": {"max_train": 64, "max_validation": 8, "calibration_size": 8, "max_length": 128},
            "fora": {"rank": 32, "alpha": 64, "fisher": {"num_batches": 2, "batch_size": 2}},
            "train": {"max_steps": 2, "batch_size": 4, "eval_every": 100, "checkpoint_every": 100,
                      "cpus_per_worker": 1},
            "storage": {"uri": f"s3://{BUCKET}/pipeline"}}
    run = RunConfig.from_dict(base)
    stages.data_prep(run, root / "data")
    stages.calibrate(run, root / "data", root / "calibration")
    figures: dict[str, list[float]] = {"in-pod Ray": [], "Ray job on the cluster": []}
    for attempt in range(2):  # cold, then warm (model converted and cached on the node)
        os.environ.pop("RAY_ADDRESS", None)
        local = stages.train(run, root / "data", root / "calibration", root / f"local-{attempt}",
                             run_key=f"local-{attempt}")
        figures["in-pod Ray"].append(local["first_step_s"])
        import ray

        ray.shutdown()
        os.environ["RAY_ADDRESS"] = topo.ray_jobs_address
        job = stages.train(run, root / "data", root / "calibration", root / f"job-{attempt}",
                           run_key=f"job-{attempt}")
        figures["Ray job on the cluster"].append(job["first_step_s"])
        os.environ.pop("RAY_ADDRESS", None)
    return figures


# -- 3. the sweep on two nodes --------------------------------------------------------------------------
def sweep_on_two_nodes(topo: Topology, root: Path) -> dict:
    import requests
    from mlflow.tracking import MlflowClient

    base = {"name": "bench-sweep", "model": "smollm2-135m", "output_dir": str(root / "sweep-out"),
            "data": {"max_train": 128, "max_validation": 8, "calibration_size": 8, "max_length": 128},
            "fora": {"rank": 16, "alpha": 32, "fisher": {"num_batches": 2, "batch_size": 2}},
            "train": {"max_steps": 10, "batch_size": 4, "eval_every": 5, "checkpoint_every": 5,
                      "cpus_per_worker": 1},
            "sweep": {"layer_budgets": [0.25, 0.5], "lr": [3e-4, 1e-3], "scheduler": "fifo", "max_trials": 4},
            "register": {"tracking_uri": topo.mlflow_uri},
            "storage": {"uri": f"s3://{BUCKET}/pipeline"}}
    run = RunConfig.from_dict(base)
    stages.data_prep(run, root / "sweep-data")
    stages.calibrate(run, root / "sweep-data", root / "sweep-calibration")
    client = MlflowClient(topo.mlflow_uri)
    exp = client.get_experiment_by_name("fora") or client.get_experiment(client.create_experiment("fora"))
    parent = client.create_run(exp.experiment_id, run_name="bench-sweep").info.run_id
    os.environ["RAY_ADDRESS"] = topo.ray_jobs_address
    t0 = time.perf_counter()
    summary = sweep_trials(run, root / "sweep-data", root / "sweep-calibration", root / "sweep",
                           parent, run_key="bench")
    wall = time.perf_counter() - t0
    os.environ.pop("RAY_ADDRESS", None)
    auth = {"Authorization": f"Bearer {topo.ray_token}"}
    nodes = requests.get(f"{topo.ray_jobs_address}/api/v0/nodes", headers=auth, timeout=10).json()
    heads = {n["node_id"]: n["is_head_node"] for n in nodes["data"]["result"]["result"]}
    actors = requests.get(f"{topo.ray_jobs_address}/api/v0/actors", headers=auth, timeout=10,
                          params={"detail": "1", "limit": "1000"}).json()["data"]["result"]["result"]
    workers = [a for a in actors if a.get("class_name") == "RayTrainWorker"]
    placed = {"head": sum(heads.get(a["node_id"], False) for a in workers),
              "worker node": sum(not heads.get(a["node_id"], False) for a in workers)}
    return {"trials": summary.get("finished_trials"), "wall_s": wall, "placed": placed,
            "overhead_share": summary.get("seconds", {}).get("overhead_share"),
            "concurrent": summary.get("concurrent")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="io,start,sweep")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    parts = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="fora-bench-cluster-"))
    topo = Topology(head_cpus=1, worker_cpus=1)
    try:
        topo.start()
        topo.s3().create_bucket(Bucket=BUCKET)
        os.environ.update(topo.client_env())
        os.environ.pop("RAY_ADDRESS", None)
        print(f"topology up: S3 {topo.s3_endpoint}, MLflow {topo.mlflow_uri}, Ray {topo.ray_jobs_address} "
              f"(head 1 CPU + worker 1 CPU); {os.cpu_count()} CPUs on this machine")
        if "io" in parts:
            io = checkpoint_io(args.repeat)
            print(f"\n## Checkpoint I/O: default adapter + Adam state ({io['bytes'] / 1e6:.1f} MB), median of "
                  f"{args.repeat}")
            print("| | local disk | S3 (SeaweedFS, pyarrow) | ratio S3 / local |")
            print("|---|---|---|---|")
            for what in ("persist", "restore"):
                a, b = io[f"local_{what}_s"], io[f"s3_{what}_s"]
                print(f"| {what} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {b / a:.2f}x |")
            print(f"| serialize (both) | {io['serialize_s'] * 1000:.0f} ms | | |")
            print(f"| share of a {DEFAULT.train.max_steps}-step run ({io['checkpoints']} checkpoints, "
                  f"{io['step_s']:.2f} s/step) | {100 * io['local_share']:.2f}% | {100 * io['s3_share']:.2f}% | "
                  f"{io['s3_share'] / io['local_share']:.2f}x |")
        if "start" in parts:
            start = start_to_first_step(topo, root)
            a, b = start["in-pod Ray"], start["Ray job on the cluster"]
            print("\n## Train step start -> first training step (SmolLM2-135M, 1 worker)")
            print("| | in-pod Ray | Ray job on the cluster | ratio job / in-pod |")
            print("|---|---|---|---|")
            for i, label in enumerate(("cold", "warm")):
                print(f"| {label} | {a[i]:.1f} s | {b[i]:.1f} s | {b[i] / a[i]:.2f}x |")
        if "sweep" in parts:
            sw = sweep_on_two_nodes(topo, root)
            print("\n## Sweep on the two-node cluster (4 trials, SmolLM2-135M, 10 steps each)")
            print(f"trials finished: {sw['trials']}; training workers placed: {json.dumps(sw['placed'])}; "
                  f"concurrent trials: {sw['concurrent']}; wall {sw['wall_s']:.0f} s; "
                  f"overhead share {100 * (sw['overhead_share'] or 0):.0f}%")
    finally:
        topo.remove()


if __name__ == "__main__":
    main()
