"""Forgetting, measured: perplexity on a general text the model was not tuned on, and KL drift from the base.

``eval.general_text`` names the text:

* ``builtin:wikitext-2`` (default): the first 100 KB (about 24k tokens) of the WikiText-2 validation split,
  shipped with the package (``general_text_wikitext2.txt``, CC BY-SA 3.0), so a fresh or offline machine
  measures it too; ``$FORA_GENERAL_TEXT`` may point at a longer copy.
* a path to a UTF-8 text file, or an ``s3://`` URI: read as is; missing, it is an error naming the field.
* ``""``: off.

The first ``eval.general_tokens`` tokens are cut into windows of ``WINDOW`` tokens; base and tuned model
are scored on the same windows (:func:`fora_core.text_drift`), so the numbers are comparable across runs
of the same model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from fora_core import text_drift
from fora_core.diagnostics import TextDrift

from ..config.errors import RunConfigError

log = logging.getLogger("fora")

BUILTIN = "builtin:wikitext-2"
WINDOW = 256
BUILTIN_FILE = Path(__file__).with_name("general_text_wikitext2.txt")
"""The first 100 KB of WikiText-2's validation split, shipped with the package (CC BY-SA 3.0, see
general_text_wikitext2.LICENSE.md): every machine measures forgetting on the same text, hub or not."""


def load_general_text(spec: str) -> tuple[str, str] | None:
    """(text, where it came from) for ``eval.general_text``; None when it is off."""
    if not spec:
        return None
    if spec != BUILTIN:
        if spec.startswith("s3://"):
            from ..runtime import storage

            return storage.read_text(spec), spec
        path = Path(spec)
        if not path.is_file():
            raise RunConfigError(f"invalid value for 'eval.general_text': {spec!r} (file not found; allowed: "
                                 f"{BUILTIN}, a text file, an s3:// URI, or '' to turn it off)")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as err:
            raise RunConfigError(f"'eval.general_text': {spec} is not UTF-8 text ({err.reason} at byte "
                                 f"{err.start})") from None
    env = os.environ.get("FORA_GENERAL_TEXT")  # a longer copy, where a site keeps one
    source = Path(env) if env else BUILTIN_FILE
    return source.read_text(encoding="utf-8"), str(source)


def token_windows(tokenizer, text: str, max_tokens: int, window: int = WINDOW) -> torch.Tensor:
    """The first ``max_tokens`` tokens of ``text`` as full windows, (n_windows, window); at least one."""
    ids = tokenizer(text[: max_tokens * 12], add_special_tokens=False)["input_ids"][:max_tokens]
    if len(ids) < 2:
        raise RunConfigError("'eval.general_text': the text has fewer than 2 tokens")
    window = min(window, len(ids))
    n = len(ids) // window
    return torch.tensor(ids[: n * window], dtype=torch.long).view(n, window)


def measure(peft_model, windows: torch.Tensor, batch_size: int = 4) -> TextDrift:
    """Base vs tuned on every window (summed token statistics)."""
    device = next(peft_model.parameters()).device
    total = TextDrift(0.0, 0.0, 0.0, 0)
    for i in range(0, len(windows), batch_size):
        total = total + text_drift(peft_model, windows[i : i + batch_size].to(device))
    return total


def general_text_metrics(peft_model, tokenizer, spec: str, max_tokens: int) -> dict | None:
    """{"source", "tokens", "base_perplexity", "tuned_perplexity", "kl_drift"}; None when off/unreachable."""
    loaded = load_general_text(spec)
    if loaded is None:
        return None
    text, source = loaded
    windows = token_windows(tokenizer, text, max_tokens)
    if windows.numel() < max_tokens:
        log.warning("eval.general_tokens is %d but %s holds %d full windows (%d tokens): scoring those", max_tokens,
                    source, len(windows), windows.numel())
    drift = measure(peft_model, windows)
    return {"source": source, "tokens": drift.tokens, "base_perplexity": drift.perplexity_base,
            "tuned_perplexity": drift.perplexity_tuned, "kl_drift": drift.mean_kl}
