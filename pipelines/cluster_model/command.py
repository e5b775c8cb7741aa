"""``fora cluster-check``: the deployment model on your own overlay, before ``kubectl apply -k``. It renders the
overlay with kustomize (``kubectl kustomize``, or a ``kustomize`` binary), places the compiled pipelines' step pods
in its namespace, and prints every needed edge its NetworkPolicies shut and every edge or RBAC grant no row of the
table needs (``check.py``); exit 1 when there is one, like a linter."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from ..config.errors import RunConfigError
from .check import check
from .pods import KFP_NAMESPACE

COMPILED = Path(__file__).resolve().parents[1] / "kubeflow"


def render(folder: Path) -> list[dict]:
    """The overlay's objects, as ``kubectl apply -k`` would send them."""
    if not (folder / "kustomization.yaml").is_file() and not (folder / "kustomization.yml").is_file():
        raise RunConfigError(f"{folder}: no kustomization.yaml (give an overlay folder, e.g. k8s/overlays/standalone)")
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(folder)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    else:
        raise RunConfigError("cluster-check renders the overlay with kustomize: put kubectl (or kustomize) on the PATH")
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        first = (out.stderr.strip().splitlines() or ["(no message)"])[0]
        raise RunConfigError(f"{' '.join(command[:2])} {folder} failed: {first}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def cluster_check(overlay: str, pipelines: list[str] | None = None, layout: str = "auto",
                  extra: list[str] | None = None) -> tuple[int, str]:
    """(exit code, report) for an overlay (plus ``extra`` kustomizations applied in the same namespace, such as
    k8s/rayjob) and the compiled pipeline specs (default: the checked-in ones)."""
    docs = render(Path(overlay))
    namespaces = {d["metadata"].get("namespace") for d in docs if d["metadata"].get("namespace")}
    if len(namespaces) != 1:
        raise RunConfigError(f"{overlay}: the render holds {len(namespaces)} namespaces ({sorted(namespaces)}); set one "
                             "`namespace:` in the overlay")
    (namespace,) = namespaces
    for folder in extra or []:
        docs += [{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in render(Path(folder))]
    specs = [Path(p) for p in pipelines] if pipelines else sorted(COMPILED.glob("fora_*pipeline.yaml"))
    for spec in specs:
        if not spec.is_file():
            raise RunConfigError(f"--pipeline {spec}: no such compiled pipeline (fora compile writes one)")
    profile = namespace != KFP_NAMESPACE if layout == "auto" else layout == "profile"
    findings = check(docs, namespace, specs, profile=profile)
    head = (f"cluster-check {overlay}: namespace {namespace} ({'profile' if profile else 'standalone'} layout), "
            f"{len(specs)} compiled pipeline(s): ")
    if not findings:
        return 0, head + "no needed edge shut, no edge or grant beyond the table"
    return 1, "\n".join([head + f"{len(findings)} finding(s)", *(f"  {f}" for f in findings)])


def add_parser(sub) -> None:
    """``fora cluster-check``'s arguments."""
    p = sub.add_parser("cluster-check", help="the deployment model on a kustomize overlay: needed traffic its "
                       "NetworkPolicies shut, traffic or RBAC grants beyond what the pods need (exit 1 on any)")
    p.add_argument("overlay", help="the overlay you apply, e.g. k8s/overlays/standalone")
    p.add_argument("--pipeline", action="append", default=None, metavar="YAML",
                   help="a compiled pipeline whose step pods to check (default: the checked-in ones)")
    p.add_argument("--layout", choices=("auto", "standalone", "profile"), default="auto",
                   help="a Kubeflow profile namespace or KFP's own (auto: the namespace 'kubeflow' is standalone)")
    p.add_argument("--with-kustomization", action="append", default=[], metavar="FOLDER",
                   help="another kustomization applied in the same namespace, e.g. k8s/rayjob")
    p.set_defaults(fn=run)


def run(args) -> int:
    code, report = cluster_check(args.overlay, args.pipeline, args.layout, args.with_kustomization)
    print(report)
    return code
