"""The packages of ``pipelines/`` stay layered: imports only point down, and no module imports itself back.

Every import counts, also one inside a function (a lazy import is still a dependency). The layers, from
the bottom up (each package's ``__init__.py`` says what belongs there):

    fora_core            the algorithm library (never imports pipelines or components)
    pipelines.config     the run config schema, its checks, overrides, resources, the user errors
    pipelines.runtime    storage (local and S3), atomic writes, checkpoints, Ray, MLflow tracking, model resolution
    pipelines.data       training data sources and formats, the built-in commonsense mix, fingerprints
    pipelines.evaluation lm-eval suites, general text and drift, adapter reports, paired statistics
    pipelines.registry   the MLflow registry: champion, paired test, promotion, the pyfunc loader
    pipelines.serving    a registered version behind an endpoint: KServe InferenceService, vLLM adapter check
    pipelines.preflight  a run config checked against its model, data and memory before any work
    pipelines.training   the training loop (set up, resume, fit, validate) and the one TorchTrainer builder
    pipelines.steps      the five steps and the chain that runs them
    pipelines.sweep      the Ray Tune sweep: trials, the Tune runner, the report
    pipelines.ablation   the ablation: search plan, splits, runner, scoring, claims and report
    components           one thin KFP component per step
    pipelines.kubeflow   the KFP DAGs and their compiled YAML, the local KFP runner, submission
    pipelines.cluster_model  the deployment model: every pod we cause, what it must reach and may do, and the
                         evaluators of rendered NetworkPolicies and RBAC against it
    pipelines.cli        the ``fora`` command (and the top-level compatibility module for old registered models)

A layer may import its own modules and any layer below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["fora_core", "pipelines.config", "pipelines.runtime", "pipelines.data", "pipelines.evaluation",
         "pipelines.registry", "pipelines.serving", "pipelines.preflight", "pipelines.training", "pipelines.steps",
         "pipelines.sweep", "pipelines.ablation", "components", "pipelines.kubeflow", "pipelines.cluster_model",
         "pipelines"]
PACKAGES = ("fora_core", "pipelines", "components")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at any depth of the file (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` depends on a.b.c (or its package)
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific layer that holds ``module``."""
    best = -1
    for i, layer in enumerate(LAYERS):
        if (module == layer or module.startswith(layer + ".")) and (best < 0 or len(layer) > len(LAYERS[best])):
            best = i
    assert best >= 0, f"{module} is in no layer: add it to a package listed in tests/test_layering.py"
    return best


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)]}) imports {b} ({LAYERS[layer_of(b)]})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer():
    for name in all_modules():
        layer_of(name)


def test_imports_only_point_down():
    assert upward_imports(graph()) == []


def test_no_import_circle():
    assert circles(graph()) == []


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in all_modules().values()
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


MAX_FUNCTION_LINES = 80


def long_functions(paths) -> dict[str, int]:
    """{path:function: lines} of every function (methods and nested ones too) longer than MAX_FUNCTION_LINES,
    counted from ``def`` (decorators excluded) to its last line."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[f"{Path(path).name}:{node.name}"] = lines
    return found


def test_no_function_over_80_lines():
    assert long_functions(all_modules().values()) == {}


def test_a_long_function_is_reported(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    (tmp_path / "ok.py").write_text("def fits():\n" + body)
    (tmp_path / "long.py").write_text("class A:\n    def too_long(self):\n" + body.replace("    ", "        ")
                                      + "        return 1\n")
    assert long_functions([tmp_path / "ok.py", tmp_path / "long.py"]) == {"long.py:too_long": 81}


def test_every_package_says_what_belongs_there():
    for init in (ROOT / "pipelines").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init.relative_to(ROOT)} needs a docstring: what belongs here, what it imports"


# The checks above must be able to fail: the same functions on small made-up graphs.
def test_an_upward_import_is_reported():
    edges = {"pipelines.runtime.storage": {"pipelines.steps.stages"}, "pipelines.steps.stages": set()}
    assert upward_imports(edges) == ["pipelines.runtime.storage (pipelines.runtime) imports "
                                     "pipelines.steps.stages (pipelines.steps)"]
    assert upward_imports({"pipelines.steps.stages": {"pipelines.runtime.storage"}}) == []


def test_a_circle_is_reported():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_a_lazy_import_counts(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..steps import stages\n    import pipelines.sweep.driver\n")
    modules = {"pipelines.steps.stages": path, "pipelines.sweep.driver": path, "pipelines.runtime.m": path}
    assert imports_of("pipelines.runtime.m", path, modules) == {"pipelines.steps.stages", "pipelines.sweep.driver"}


@pytest.mark.parametrize("module, layer", [("pipelines.cli", "pipelines"), ("pipelines.steps.train", "pipelines.steps"),
                                          ("components.train.component", "components")])
def test_layer_of(module, layer):
    assert LAYERS[layer_of(module)] == layer


def test_versions_registered_before_the_package_split_still_find_their_loader():
    """Their ``MLmodel`` names ``loader_module: pipelines.pyfunc_model``."""
    import pipelines.pyfunc_model as old
    import pipelines.registry.pyfunc_model as new

    assert old._load_pyfunc is new._load_pyfunc


def test_paths_from_a_modules_own_location_hold_from_any_working_directory(tmp_path, monkeypatch):
    """Moving a module changes what ``Path(__file__).parents[n]`` is."""
    from pipelines.kubeflow import fora_pipeline

    monkeypatch.chdir(tmp_path)
    assert fora_pipeline.DEFAULT_CONFIG_PATH == ROOT / "configs" / "cluster.yaml"
    assert fora_pipeline.DEFAULT_CONFIG_PATH.is_file()


def test_the_builtin_general_text_ships_with_the_package_and_is_the_start_of_wikitext2(tmp_path, monkeypatch):
    """A fresh machine measures forgetting: the text is the package's own, the start of WikiText-2's
    validation split (checked against the development copy in ../shared)."""
    from pipelines.evaluation import general_text

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORA_GENERAL_TEXT", raising=False)
    text, source = general_text.load_general_text(general_text.BUILTIN)
    assert source == str(ROOT / "pipelines" / "evaluation" / "general_text_wikitext2.txt")
    full = (ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")
    assert 90_000 < len(text) <= 100_000 and full.startswith(text) and text.endswith("\n")
    assert (ROOT / "pipelines" / "evaluation" / "general_text_wikitext2.LICENSE.md").is_file()


def test_the_train_step_and_the_sweep_share_the_training_package_and_nothing_else():
    """One loop and one ``TorchTrainer`` builder (``pipelines/training``): the sweep does not reach into the train
    step, the train step never into the sweep, and no other module builds a trainer."""
    edges = graph()
    sweep = {b for a, targets in edges.items() if a.startswith("pipelines.sweep") for b in targets}
    assert "pipelines.steps.train" not in sweep and "pipelines.training.trainer" in sweep
    assert not any(b.startswith("pipelines.sweep") for b in edges["pipelines.steps.train"])
    assert "pipelines.training.trainer" in edges["pipelines.steps.train"]
    builders = [name for name, path in all_modules().items() if "TorchTrainer(" in path.read_text()]
    assert builders == ["pipelines.training.trainer"]
