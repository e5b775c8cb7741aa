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

A model tuned on conversations answers as it was judged: ``fora_prompt.json`` (written at registration when the
training data were chat data) says so, and each prompt string is then a user turn rendered with the model's chat
template (or the one ``data.chat_template`` trained it with) and its generation prompt; the answer stops at the
end-of-turn token. This is the evaluate step's rendering and decoding of a held-out question
(``evaluation/heldout.py``), so ``predict(["Who are you?"])`` gives the generations table's answer.

    >>> mlflow.pyfunc.load_model("models:/fora-chat@champion").predict(["Who are you?"])

A prompt string may also be a whole conversation, the JSON of an OpenAI-style ``messages`` list (or of
``{"messages": [...]}``): its turns go through the template as they are, the run's system prompt added when it
has no system turn, and the model answers its last user turn. Over HTTP (``mlflow models serve``, KServe's MLServer)
that is ``{"inputs": ["[{\"role\": \"user\", \"content\": \"Who are you?\"}]"]}``: the input schema stays one
string column, so a plain prompt and a conversation can share one request.
"""

from __future__ import annotations

import json
from pathlib import Path

BASE_FILE = "fora_base.json"
PROMPT_FILE = "fora_prompt.json"


def write_prompt_format(folder: Path, chat: bool, chat_template: str | None, system_prompt: str = "template") -> None:
    """``fora_prompt.json`` in a registered folder: whether prompts are user turns of a chat template, the template
    itself when the run named one (None: the tokenizer's own), and ``data.system_prompt`` as training used it.
    A merged folder's tokenizer gets the run's template too, so a server that renders chat itself renders the
    same turns."""
    (Path(folder) / PROMPT_FILE).write_text(json.dumps({"chat": chat, "chat_template": chat_template,
                                                        "system_prompt": system_prompt}))
    if chat and chat_template and (Path(folder) / "tokenizer_config.json").exists():
        # a merged model: its tokenizer renders as training did for any runtime that reads it (KServe's
        # Hugging Face server and vLLM apply the tokenizer's template on their chat endpoints)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(folder)


def read_prompt_format(folder: Path) -> dict:
    """What ``write_prompt_format`` wrote; a version registered before it holds none: plain text prompts."""
    path = Path(folder) / PROMPT_FILE
    found = json.loads(path.read_text()) if path.exists() else {"chat": False, "chat_template": None}
    return {"system_prompt": "template", **found}


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
        self.prompt_format = read_prompt_format(folder)
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
        max_new_tokens = int((params or {}).get("max_new_tokens", 32))
        if self.prompt_format["chat"]:
            return self._chat_answers(prompts, max_new_tokens)
        outs = []
        for p in prompts:
            ids = self.tokenizer(p, return_tensors="pt")
            with torch.no_grad():
                gen = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            outs.append(self.tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return outs

    def chat_prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt as a user turn, or a JSON ``messages`` list as its turns (:func:`conversation_of`), after the
        run's system turn, through the chat template with its generation prompt: the tokens the evaluate step
        gives a held-out question."""
        from ..data.chat import render_conversation, with_system_prompt

        template, system = self.prompt_format["chat_template"], self.prompt_format["system_prompt"]
        texts = [render_conversation(self.tokenizer, with_system_prompt(conversation_of(p), system),
                                     template, generation_prompt=True) for p in prompts]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _chat_answers(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers up to the end-of-turn token: the evaluate step's held-out generation."""
        from ..evaluation.heldout import generate_answers

        return generate_answers(self.model, self.tokenizer, self.chat_prompt_ids(prompts), max_new_tokens,
                                batch_size=1)


def conversation_of(prompt: str) -> list[dict[str, str]]:
    """A prompt string as chat turns: the JSON of a ``messages`` list (or of ``{"messages": [...]}``) of
    ``{"role": system|user|assistant, "content": str}`` ending with a user turn, else one user turn with the
    whole string. A string that is such JSON but malformed is a ``ValueError`` naming what is wrong."""
    text = prompt.strip()
    if not text.startswith(("[", "{")):
        return [{"role": "user", "content": prompt}]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [{"role": "user", "content": prompt}]  # text that merely starts with a bracket
    if isinstance(value, dict) and "messages" in value:
        value = value["messages"]
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        return [{"role": "user", "content": prompt}]
    for i, m in enumerate(value):
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected {{'role': 'system'|'user'|'assistant', 'content': str}}, "
                             f"got {json.dumps(m)[:120]}")
    if value[-1]["role"] != "user":
        raise ValueError(f"the last message must be the user's turn to answer, got role {value[-1]['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _load_pyfunc(data_path: str) -> MergedModel:
    """MLflow's entry point for ``loader_module`` models."""
    return MergedModel(data_path)
