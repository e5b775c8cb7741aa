"""The images the compiled pipeline's steps run, taken from the one place the cluster's images are set: the kustomize
overlay it is applied with (its ``images:`` and those of the components it lists, ``k8s/components/images`` last).

kustomize's image transformer (kubernetes-sigs/kustomize ``api/filters/imagetag``): an ``images:`` entry matches a
container image by ``name`` (the image without its tag or digest); ``newName`` replaces the name, ``newTag`` the tag,
``digest`` sets ``@digest`` instead of a tag. An overlay's transformers run after those of its resources and
components, in the order listed, so an entry in the overlay overrides the images component's. ``tests/test_images``
checks this reading against a real kustomize render.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from components import BASE_IMAGE, CUDA_IMAGE

from ..config.errors import RunConfigError

# the images the resources name (k8s/, untagged), and the default tags; this project has published neither
NAMES = ("ghcr.io/fora-pipelines/fora", "ghcr.io/fora-pipelines/fora-cuda")
UNPUBLISHED = frozenset({"ghcr.io/fora-pipelines/fora:0.1.0", "ghcr.io/fora-pipelines/fora-cuda:0.1.0"})
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class Images:
    base: str
    """The CPU image every step runs."""
    cuda: str
    """The CUDA image of the steps the config gives GPUs."""

    @property
    def unpublished(self) -> list[str]:
        return [i for i in (self.base, self.cuda) if i in UNPUBLISHED]


def from_environment() -> Images:
    """``FORA_IMAGE`` / ``FORA_CUDA_IMAGE`` when set, else the defaults (``components``)."""
    return Images(BASE_IMAGE, CUDA_IMAGE)


def _split(image: str) -> tuple[str, str]:
    """(name, '@digest' or ':tag' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    return (image[:colon], image[colon:]) if colon > slash else (image, "")


def transform(image: str, entry: dict) -> str:
    """One kustomize ``images:`` entry applied to one image (unchanged when the name does not match)."""
    name, suffix = _split(image)
    if name != entry.get("name"):
        return image
    name = entry.get("newName", name)
    if entry.get("digest"):
        return f"{name}@{entry['digest']}"
    if "newTag" in entry:
        return f"{name}:{entry['newTag']}"
    return name + suffix


def _kustomization(folder: Path) -> dict:
    for name in KUSTOMIZATION_FILES:
        if (folder / name).is_file():
            return yaml.safe_load((folder / name).read_text()) or {}
    raise RunConfigError(f"--images-from {folder}: no kustomization.yaml there (give a kustomize overlay folder, e.g. "
                         "k8s/overlays/standalone)")


def image_entries(folder: Path) -> list[dict]:
    """Every ``images:`` entry that applies to the overlay's render, in the order kustomize applies them."""
    k = _kustomization(folder)
    entries: list[dict] = []
    for ref in [*(k.get("resources") or []), *(k.get("components") or [])]:
        sub = (folder / ref).resolve()
        if sub.is_dir():
            entries += image_entries(sub)
    return entries + list(k.get("images") or [])


def from_overlay(folder: str | Path) -> Images:
    """The base and CUDA images the overlay's render gives the fora images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunConfigError(f"--images-from {folder}: not a folder (give a kustomize overlay, e.g. k8s/overlays/standalone)")
    out = []
    for name in NAMES:
        image = name
        for entry in image_entries(folder):
            image = transform(image, entry)
        out.append(image)
    return Images(*out)


def choose(images_from: str | None) -> Images:
    """The overlay's images when given, else the environment's (FORA_IMAGE / FORA_CUDA_IMAGE) or the defaults."""
    if images_from:
        if os.environ.get("FORA_IMAGE") or os.environ.get("FORA_CUDA_IMAGE"):
            raise RunConfigError("--images-from and FORA_IMAGE/FORA_CUDA_IMAGE both name images: use one")
        return from_overlay(images_from)
    return from_environment()


def warning(images: Images) -> str | None:
    """A line for the user when the steps would pull an image this project has not published."""
    if not images.unpublished:
        return None
    return (f"fora: warning: the steps would pull {', '.join(images.unpublished)}, which this project has not "
            "published: build and push your image (make image IMAGE=<registry>/fora:<tag>), set it in your overlay's "
            "`images:` and pass --images-from k8s/overlays/<yours>")


def retag(path: Path, images: Images) -> Path:
    """Point a compiled spec's executors at ``images`` (the components name ``BASE_IMAGE`` / ``CUDA_IMAGE``)."""
    swap = {BASE_IMAGE: images.base, CUDA_IMAGE: images.cuda}
    if all(k == v for k, v in swap.items()):
        return path
    docs = list(yaml.safe_load_all(path.read_text()))
    for executor in docs[0]["deploymentSpec"]["executors"].values():
        container = executor.get("container", {})
        if container.get("image") in swap:
            container["image"] = swap[container["image"]]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path
