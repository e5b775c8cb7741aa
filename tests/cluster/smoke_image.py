"""``make image-smoke``: the smoke pipeline's five steps, each in its own container of the built image (as
KFP runs them: one pod per step), as the image's non-root user (UID 1000) with a read-only root filesystem
and a tmpfs /tmp, against the cluster topology of ``topology.py`` (S3, MLflow with basic auth, a two-node
Ray cluster with token auth). Steps hand over through S3 only; train is submitted from its container as a
Ray job to the cluster. Checks the artifacts in S3, the registered version and that no secret reached a
container's output. Everything started is stopped at the end.

    python tests/cluster/smoke_image.py [--image ghcr.io/fora-pipelines/fora:0.1.0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from topology import Topology  # noqa: E402

BUCKET = "fora-smoke"


def podman_run(image: str, env: dict[str, str], argv: list[str], log: Path) -> str:
    cmd = ["podman", "run", "--rm", "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp:rw,size=4g,mode=1777",
           "--network", "host", "--security-opt", "no-new-privileges", "--cap-drop", "ALL"]
    for key in env:
        cmd += ["--env", key]  # values from this process's environment: never on the command line
    cmd += [image, *argv]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=1200)
    text = out.stdout + out.stderr
    log.write_text(text)
    print(f"  {' '.join(argv[:2])}: exit {out.returncode} in {time.perf_counter() - t0:.0f} s")
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in the container:\n{text[-4000:]}")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=os.environ.get("IMAGE", "ghcr.io/fora-pipelines/fora:0.1.0"))
    args = ap.parse_args()
    topo = Topology()
    logs = topo.root / "container-logs"
    try:
        topo.start()
        logs.mkdir(parents=True, exist_ok=True)
        topo.s3().create_bucket(Bucket=BUCKET)
        env = {**topo.client_env(), "RAY_ADDRESS": ""}
        cfg = "configs/smoke.yaml"
        run = f"s3://{BUCKET}/smoke"
        common = ["--set", f"register.tracking_uri={topo.mlflow_uri}", "--set", f"storage.uri={run}",
                  "--set", "output_dir=/tmp/fora-run", "--set", "train.cpus_per_worker=1", "--quiet"]
        print(f"services: S3 {topo.s3_endpoint}, MLflow {topo.mlflow_uri}, Ray {topo.ray_jobs_address}; "
              f"image {args.image}")
        texts = [podman_run(args.image, env, ["fora", "data-prep", cfg, "--out", f"{run}/data", *common],
                            logs / "data-prep.log")]
        texts.append(podman_run(args.image, env, ["fora", "calibrate", cfg, "--data", f"{run}/data",
                                                  "--out", f"{run}/calibration", *common], logs / "calibrate.log"))
        texts.append(podman_run(args.image, {**env, "RAY_ADDRESS": topo.ray_jobs_address},
                                ["fora", "train", cfg, "--data", f"{run}/data", "--calibration", f"{run}/calibration",
                                 "--out", f"{run}/train", "--run-key", "image-smoke", *common], logs / "train.log"))
        texts.append(podman_run(args.image, env, ["fora", "evaluate", cfg, "--data", f"{run}/data", "--adapter",
                                                  f"{run}/train/adapter", "--out", f"{run}/eval", *common],
                                logs / "evaluate.log"))
        texts.append(podman_run(args.image, env, ["fora", "register", cfg, "--data", f"{run}/data",
                                                  "--calibration", f"{run}/calibration", "--adapter",
                                                  f"{run}/train/adapter", "--eval", f"{run}/eval",
                                                  "--out", "/tmp/fora-run/merged", *common], logs / "register.log"))
        keys = [o["Key"] for p in topo.s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in p.get("Contents", [])]
        for want in ("smoke/data/train.jsonl", "smoke/calibration/fisher_report.json",
                     "smoke/train/adapter/adapter_model.safetensors", "smoke/eval/eval_results.json"):
            assert want in keys, (want, keys[:50])
        assert any("/checkpoints/" in k and k.endswith("fora_checkpoint.json") for k in keys), "no S3 checkpoint"
        assert "Ray job fora-train-fora-smoke-image-smoke succeeded" in texts[2], texts[2][-3000:]
        from mlflow.tracking import MlflowClient

        os.environ.update(topo.client_env())
        client = MlflowClient(topo.mlflow_uri)
        champion = client.get_model_version_by_alias("fora-smoke", "champion")
        leaked = [s for s in topo.secret_values for t in texts if s in t]
        assert not leaked, "a secret appeared in a container's output"
        print(f"OK: five steps in the image as UID 1000 (read-only root); S3 holds data, Fisher report, checkpoints,"
              f" adapter and eval; train ran as a Ray job; fora-smoke version {champion.version} is champion; "
              f"no secret in any output (logs: {logs})")
    finally:
        topo.stop()


if __name__ == "__main__":
    main()
