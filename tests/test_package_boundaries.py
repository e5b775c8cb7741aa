"""fora_core is the algorithm library: it must never import kfp, ray or mlflow."""

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("kfp", "ray", "mlflow")
ROOT = Path(__file__).resolve().parents[1]


def test_no_forbidden_import_statements():
    for path in (ROOT / "fora_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_every_module_loads_none_of_them():
    code = (
        "import pkgutil, importlib, sys, fora_core\n"
        "for m in pkgutil.walk_packages(fora_core.__path__, 'fora_core.'): importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
