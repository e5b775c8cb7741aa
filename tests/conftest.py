import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the evaluate step's score cache: one per test session, so no test reads another session's scores
if "FORA_EVAL_CACHE" not in os.environ:
    os.environ["FORA_EVAL_CACHE"] = tempfile.mkdtemp(prefix="fora-eval-cache-")
    atexit.register(shutil.rmtree, os.environ["FORA_EVAL_CACHE"], True)
sys.path.insert(0, str(Path(__file__).parent))
