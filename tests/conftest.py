import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the evaluate step's score cache: one per test session, so no test reads another session's scores
if "FORA_EVAL_CACHE" not in os.environ:
    os.environ["FORA_EVAL_CACHE"] = tempfile.mkdtemp(prefix="fora-eval-cache-")
    atexit.register(shutil.rmtree, os.environ["FORA_EVAL_CACHE"], True)
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into os.environ, and the config honours that variable
    (MLflow's convention) in processes started later (KFP local runner, Ray workers): each test starts clean."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
