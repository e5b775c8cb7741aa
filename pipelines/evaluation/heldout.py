"""The user's own held-out data, answered by the model and scored per item.

**Items.** The held-out records are the data step's validation split (``validation_text.jsonl``, by
conversation: no conversation is split between train and validation) or a file the user names
(``eval.heldout.source``). A conversation m_1..m_n gives one item per assistant turn i (``turns: all``) or
for its last one (``turns: last``):

    context   = template(m_1..m_{i-1}, add_generation_prompt=True)     # what the model is asked
    reference = content of m_i                                          # what the data says it answers

A prompt/response record gives one item: context = the prompt, reference = the response (as trained).

**Per item, for each model** (base, champion, tuned, on the same items):

* ``loss``: the mean cross-entropy over the reference's tokens given the context (nats/token, the
  trained tokens of that turn: its content and end-of-turn token);
* with generation scorers listed: the greedy answer (``max_new_tokens``, batched with left padding, stops
  at the end-of-turn token) and its score under each scorer (``metrics.py``).

``heldout/perplexity`` = exp(sum_i n_i loss_i / sum_i n_i), n_i the item's reference tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fora_core.fisher import IGNORE_INDEX

from ..config.errors import DataError
from ..config.evaluation import HeldoutConfig
from ..config.run_config import DataConfig
from ..data.chat import SYSTEM_FROM_TEMPLATE, assistant_spans, check_template, with_system_prompt
from ..data.jsonl import read_jsonl
from ..data.sources import Example, read_source, record_to_example
from ..data.tokens import collate, tokenize_example
from .metrics import score_generation

log = logging.getLogger("fora")
SAMPLES_LOGGED = 3
"""Held-out answers written to the log per model (question, answer, reference), beside the progress bar."""

VALIDATION_TEXT = "validation_text.jsonl"


@dataclass
class HeldoutItem:
    context: str
    """The text the model continues (a chat: rendered with the generation prompt)."""
    reference: str
    input_ids: list[int]
    """context + reference tokens (for the loss)."""
    labels: list[int]
    """-100 except the reference's tokens."""
    question: str
    """The last user turn (or the prompt), for people reading the generations table."""
    prompt_ids: list[int]
    """The context's tokens, as training tokenized it (what generation starts from)."""


def heldout_examples(cfg: HeldoutConfig, data_dir: str | Path) -> tuple[list[Example], str]:
    """The held-out records as examples, and where they came from."""
    if cfg.source == "validation":
        path = Path(data_dir) / VALIDATION_TEXT
        if not path.exists():
            raise DataError(f"eval.heldout.source is 'validation' but {path} is missing (written by data-prep from "
                            "this version on: re-run data-prep)")
        return [record_to_example(r, i, path.name, "auto") for i, r in enumerate(read_jsonl(path), 1)], \
            "the validation split"
    # a held-out file's form is detected from its records (it may differ from the training data's)
    return read_source(DataConfig(source=cfg.source, format="auto"))[0], cfg.source


def build_items(examples: list[Example], tokenizer, cfg: HeldoutConfig, max_length: int,
                chat_template: str | None = None, system_prompt: str = SYSTEM_FROM_TEMPLATE
                ) -> tuple[list[HeldoutItem], int]:
    """Up to ``cfg.limit`` items (module docstring) and how many were skipped for not fitting ``max_length``;
    conversations get ``data.system_prompt`` as training did (``data/chat.with_system_prompt``)."""
    items: list[HeldoutItem] = []
    skipped = 0
    if any(ex.messages is not None for ex in examples):
        check_template(tokenizer, chat_template)
    for ex in examples:
        if len(items) >= cfg.limit:
            break
        if ex.messages is None:
            tok = tokenize_example(tokenizer, ex, max_length)
            if tok is None:
                skipped += 1
                continue
            prompt_ids = tok["input_ids"][: next(i for i, x in enumerate(tok["labels"]) if x != IGNORE_INDEX)]
            items.append(HeldoutItem(ex.prompt, ex.response, tok["input_ids"], tok["labels"], ex.prompt, prompt_ids))
            continue
        turns = [i for i, m in enumerate(ex.messages) if m["role"] == "assistant"]
        for i in turns[-1:] if cfg.turns == "last" else turns:
            if len(items) >= cfg.limit:
                break
            item = _chat_item(tokenizer, with_system_prompt(ex.messages[: i + 1], system_prompt), chat_template,
                              max_length)
            if item is None:
                skipped += 1
            else:
                items.append(item)
    return items, skipped


def _chat_item(tokenizer, messages: list[dict], chat_template: str | None, max_length: int) -> HeldoutItem | None:
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    start, end = spans[-1]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if len(ids) > max_length:
        return None
    labels = [t if a < end and b > start and b > a else IGNORE_INDEX for t, (a, b) in zip(ids, enc["offset_mapping"], strict=True)]
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    context = text[:start]
    return HeldoutItem(context, messages[-1]["content"], ids, labels, question,
                       tokenizer(context, add_special_tokens=False)["input_ids"])


def items_fingerprint(items: list[HeldoutItem], cfg: HeldoutConfig) -> str:
    """The items and how they are scored (sha256, 16 hex digits): equal -> the same held-out suite."""
    h = hashlib.sha256(json.dumps({"metrics": cfg.metrics, "contains": cfg.contains, "regex": cfg.regex,
                                   "max_new_tokens": cfg.max_new_tokens}, sort_keys=True).encode())
    for it in items:
        h.update(json.dumps([it.input_ids, it.labels, it.context]).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def item_losses(model, items: list[HeldoutItem], pad_id: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """(mean cross-entropy over the item's reference tokens, their count) per item, in item order.

    Items are batched longest first, so a batch pads to nearly its own length: on a held-out set of mixed
    lengths (instruction rows: 50 tokens on average, 128 at most) this halves the tokens run through the model
    against batching in file order. Each item's loss depends only on its own tokens (padding is masked out)."""
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    out: list[tuple[float, int] | None] = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [{"input_ids": items[i].input_ids, "labels": items[i].labels} for i in chunk]
        b = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].float()
        target = b["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX,
                                                reduction="none")  # (B, T-1)
        counts = (target != IGNORE_INDEX).sum(dim=1)
        for i, total, n in zip(chunk, nll.sum(dim=1).tolist(), counts.tolist(), strict=True):
            out[i] = (total / max(1, n), int(n))
    return [o for o in out if o is not None]


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the tokenizer's eos and the model's generation config's."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 8,
                     progress: str = "") -> list[str]:
    """Greedy answers to the token ``prompts``, ``batch_size`` at a time (left-padded, grouped by length),
    in order; ``progress``: a tqdm bar over the answers with that label."""
    device = next(model.parameters()).device
    encoded = prompts
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    answers: list[str] = [""] * len(prompts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=progress, unit="answer")
    for s in range(0, len(order), batch_size):
        batch = order[s : s + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i])
            ids[row, width - n :] = torch.tensor(encoded[i])
            mask[row, width - n :] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=stops)
        for row, i in enumerate(batch):
            answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True).strip()
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return answers


def score_heldout(model, tokenizer, items: list[HeldoutItem], cfg: HeldoutConfig, batch_size: int,
                  with_loss: bool = True, label: str = "") -> dict:
    """{"metrics": {"heldout/<m>": mean}, "items": {"heldout/<m>": {"heldout": [per item]}},
    "generations": [answer per item]} for one model (items a scorer does not apply to are left out of it).
    ``label`` names the model in the progress bar and in the sample answers logged."""
    model.eval()
    metrics: dict[str, float] = {}
    per_item: dict[str, dict[str, list[float]]] = {}
    if with_loss and items:
        losses = item_losses(model, items, tokenizer.pad_token_id, batch_size)
        per_item["heldout/loss"] = {"heldout": [loss for loss, _ in losses]}
        metrics["heldout/loss"] = sum(loss for loss, _ in losses) / len(losses)
        tokens = sum(n for _, n in losses)
        metrics["heldout/perplexity"] = math.exp(sum(loss * n for loss, n in losses) / max(1, tokens))
    generations: list[str] = []
    if cfg.metrics and items:
        generations = generate_answers(model, tokenizer, [it.prompt_ids for it in items], cfg.max_new_tokens,
                                       cfg.batch_size, progress=f"held-out answers ({label or 'model'})")
        for it, answer in list(zip(items, generations, strict=True))[:SAMPLES_LOGGED]:
            log.info("held-out answer (%s): %r -> %r (reference %r)", label or "model", it.question[:100],
                     answer[:160], it.reference[:100])
        for scorer in cfg.metrics:
            scores = [score_generation(scorer, g, it.reference, contains=cfg.contains, regex=cfg.regex)
                      for g, it in zip(generations, items, strict=True)]
            kept = [s for s in scores if s is not None]
            per_item[f"heldout/{scorer}"] = {"heldout": kept}
            metrics[f"heldout/{scorer}"] = sum(kept) / len(kept) if kept else float("nan")
    return {"metrics": metrics, "items": per_item, "generations": generations}
