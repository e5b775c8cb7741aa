"""The registered model's MLflow pyfunc loader: no pickle, no code in the artifact.

The registered pyfunc holds only data (the merged model's safetensors, config and tokenizer files) and an
``MLmodel`` file naming this module (``loader_module: pipelines.registry.pyfunc_model``). Loading it imports this
module from the installed fora-pipelines package and reads the weights with ``safetensors``: whoever can
write the artifact bucket can change the weights, but cannot make a loader run their code (a cloudpickled
``PythonModel`` would unpickle whatever the bucket holds).

    >>> model = mlflow.pyfunc.load_model("models:/fora-smollm2-135m@champion")
    >>> model.predict(["Question: Why is the sky blue?\\nAnswer:"], params={"max_new_tokens": 16})

An adapter-only version (``register.artifact: adapter``) holds the PEFT adapter and ``fora_base.json``
naming the base model it needs (``{"model": "smollm2-135m", "dtype": "float32"}``); the same call loads
the base (built-in, a folder, a hub id or an s3:// folder), applies the adapter and merges it in memory.
"""

from __future__ import annotations

from pathlib import Path

BASE_FILE = "fora_base.json"


def _adapter_on_base(folder: Path):
    """(merged model, tokenizer) from an adapter folder and the base model its ``fora_base.json`` names."""
    import json

    from fora_core import ModelSource, load_adapter, merge_adapter

    from ..runtime.models import resolve_model

    base = json.loads((folder / BASE_FILE).read_text())
    model, tokenizer = ModelSource(resolve_model(base["model"]), dtype=base.get("dtype", "float32")).load()
    peft_model, _, _ = load_adapter(model, folder)
    return merge_adapter(peft_model), tokenizer


class MergedModel:
    """``predict`` takes a list of prompts (or a DataFrame with a 'prompt' column) and returns the greedy
    continuations (``params``: max_new_tokens, default 32)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        if (folder / BASE_FILE).exists():
            self.model, self.tokenizer = _adapter_on_base(folder)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        self.model.eval()

    def predict(self, model_input, params: dict | None = None) -> list[str]:
        import torch

        if hasattr(model_input, "columns"):  # a DataFrame: its 'prompt' column, else its only column
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            prompts = [str(p) for p in model_input[column]]
        else:
            prompts = list(model_input)
        outs = []
        for p in prompts:
            ids = self.tokenizer(p, return_tensors="pt")
            with torch.no_grad():
                gen = self.model.generate(**ids, max_new_tokens=int((params or {}).get("max_new_tokens", 32)),
                                          do_sample=False)
            outs.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return outs


def _load_pyfunc(data_path: str) -> MergedModel:
    """MLflow's entry point for ``loader_module`` models."""
    return MergedModel(data_path)
