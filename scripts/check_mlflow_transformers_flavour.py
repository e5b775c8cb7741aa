"""Does MLflow's ``transformers`` flavour work with the transformers installed here? (issue 10)

The register step logs models with our own pyfunc loader (``pipelines/registry/pyfunc_model.py``) over a plain
transformers folder. This script checks the alternative on a tiny random Llama saved like our merged
models: save with ``mlflow.transformers.save_model``, load back as transformers objects and as pyfunc, and
compare the logits and a greedy generation with the original. It prints what MLflow supports, what is
installed, and each check's outcome (exit 0 whatever they are: it reports, it does not gate).

    .venv/bin/python scripts/check_mlflow_transformers_flavour.py
"""

from __future__ import annotations

import json
import tempfile
import traceback
from importlib.metadata import version
from pathlib import Path

import torch


def _tiny(root: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from fora_core.model_source import convert_builtin

    tok = AutoTokenizer.from_pretrained(convert_builtin("smollm2-135m"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return model, tok


def main() -> None:
    import mlflow
    from mlflow.ml_package_versions import _ML_PACKAGE_VERSIONS

    supported = _ML_PACKAGE_VERSIONS["transformers"]["models"]
    report: dict = {"mlflow": version("mlflow"), "transformers": version("transformers"),
                    "mlflow_tests_transformers": f"{supported['minimum']} .. {supported['maximum']}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, tok = _tiny(root)
        prompt = "Question: what is two plus two?\nAnswer:"
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            ref_logits = model(**ids).logits
            ref_text = tok.decode(model.generate(**ids, max_new_tokens=8, do_sample=False)[0])
        for attempt, extra in (("defaults", {}), ("pip_requirements given", {"pip_requirements": ["torch",
                                                                                                  "transformers"]})):
            steps: dict = {}
            where = root / attempt.replace(" ", "-")
            try:
                mlflow.transformers.save_model({"model": model, "tokenizer": tok}, str(where),
                                               task="text-generation", **extra)
                steps["save_model"] = "ok"
                loaded = mlflow.transformers.load_model(str(where), return_type="components")
                with torch.no_grad():
                    diff = (loaded["model"](**ids).logits - ref_logits).abs().max().item()
                steps["load_model (components)"] = f"ok, max |logit difference| {diff:.2e}"
                pyfunc = mlflow.pyfunc.load_model(str(where))
                out = pyfunc.predict([prompt], params={"max_new_tokens": 8, "do_sample": False})
                steps["pyfunc predict"] = (f"ok: {str(out)[:80]!r}; reference continuation "
                                           f"{ref_text[len(prompt):][:40]!r}")
            except Exception as err:  # the point is to see what breaks
                steps["failed at"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                steps["traceback tail"] = [line.strip() for line in traceback.format_exc().strip().splitlines()[-4:]]
            report.setdefault("checks", {})[attempt] = steps
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
