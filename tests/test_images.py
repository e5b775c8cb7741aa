"""One place for images: the kustomize overlay. ``fora compile/submit --images-from OVERLAY`` reads the overlay's
``images:`` (and its components') as kustomize's image transformer does; the reading is checked against a real
kustomize render of the same overlay (the MLflow pod runs the CPU image, the Ray pods the CUDA one)."""

from __future__ import annotations

import yaml
from k8s_render import K8S, overlay, render_with_any

from pipelines import cli
from pipelines.kubeflow.images import Images, from_overlay, transform

MIRROR = [{"name": "ghcr.io/fora-pipelines/fora", "newName": "registry.example.com:5000/ml/fora", "newTag": "1.2.3"},
          {"name": "ghcr.io/fora-pipelines/fora-cuda", "digest": "sha256:" + "ab" * 32}]


def _rendered(docs) -> Images:
    mlflow = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    ray = next(d for d in docs if d["kind"] == "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    return Images(mlflow, ray["containers"][0]["image"])


def test_the_overlays_images_as_kustomize_renders_them(tmp_path):
    for images in (None, MIRROR, MIRROR[:1]):
        folder = overlay(tmp_path, "imgs", ["raycluster"], images=images)
        assert from_overlay(folder) == _rendered(render_with_any(folder)), images
    assert from_overlay(K8S / "overlays" / "standalone") == Images("ghcr.io/fora-pipelines/fora:0.1.0",
                                                                   "ghcr.io/fora-pipelines/fora-cuda:0.1.0")


def test_transform_keeps_a_registry_port_apart_from_the_tag():
    entry = {"name": "localhost:5000/fora", "newTag": "2"}
    assert transform("localhost:5000/fora:1", entry) == "localhost:5000/fora:2"
    assert transform("localhost:5000/fora", entry) == "localhost:5000/fora:2"
    assert transform("localhost:5000/other:1", entry) == "localhost:5000/other:1"


def test_compile_takes_the_overlays_images_for_every_step(tmp_path, capsys):
    folder = overlay(tmp_path, "imgs", [], images=MIRROR)
    want = from_overlay(folder)
    out = tmp_path / "build"
    assert cli.main(["compile", "--config", "configs/cluster-8b-gpu.yaml", "--images-from", str(folder),
                     "--output-dir", str(out)]) == 0
    assert "not published" not in capsys.readouterr().err
    for name in ("fora_pipeline.yaml", "fora_sweep_pipeline.yaml"):
        spec = next(yaml.safe_load_all((out / name).read_text()))
        images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
        assert images == {want.base, want.cuda}, (name, images)  # the 8B config puts some steps on GPUs


def test_unpublished_defaults_are_said_and_two_sources_refused(tmp_path, capsys, monkeypatch):
    assert cli.main(["compile", "--output-dir", str(tmp_path / "b")]) == 0
    assert "would pull ghcr.io/fora-pipelines/fora:0.1.0, ghcr.io/fora-pipelines/fora-cuda:0.1.0, which this project has not published" in \
        capsys.readouterr().err
    monkeypatch.setenv("FORA_IMAGE", "registry.example.com/fora:1")
    assert cli.main(["compile", "--images-from", "k8s/overlays/standalone", "--output-dir", str(tmp_path / "c")]) == 2
    assert "use one" in capsys.readouterr().err
