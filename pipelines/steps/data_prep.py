"""Step 1, data prep: read a training source, template it, tokenize with loss on the response only, and
write train / validation / calibration splits plus a data card.

The sources and formats it reads are ``pipelines/data/sources.py``.

A malformed record stops the step with an error naming the file, the row and the field. Records dropped
for a reason (too long, duplicate) are counted in the data card; nothing is dropped silently.

Outputs in ``out_dir``: ``train.jsonl``, ``validation.jsonl``, ``calibration.jsonl`` (one
{"input_ids", "labels"} record per line, labels = -100 on the prompt), ``validation_text.jsonl`` (the
validation records as text: ``{"messages"}`` or ``{"prompt", "response"}``, for the held-out evaluation)
and ``data_card.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
from collections import Counter
from pathlib import Path

from fora_core.fisher import IGNORE_INDEX

from ..config.errors import DataError
from ..config.run_config import DataConfig
from ..data.chat import (
    check_template,
    conversation_key,
    injected_system_prompt,
    read_chat_template,
    tokenize_conversation,
    with_system_prompt,
)
from ..data.jsonl import write_jsonl
from ..data.sources import read_source
from ..data.tokens import tokenize_example

log = logging.getLogger("fora")


# -- tokenizing ---------------------------------------------------------------------------------------
def _chat_row(tokenizer, messages: list[dict], max_length: int, chat_template: str | None,
              stats: Counter) -> tuple[dict[str, list[int]], int] | None:
    """One conversation's tokens (``data/chat.py``) and the turns kept, counting turns and truncations
    into ``stats``."""
    tok = tokenize_conversation(tokenizer, messages, max_length, chat_template)
    if tok is None:
        return None
    stats["conversations"] += 1
    stats["turns"] += tok.turns
    stats["assistant_turns"] += sum(m["role"] == "assistant" for m in messages[: tok.turns])
    if tok.turns_dropped:
        stats["truncated"] += 1
        stats["turns_dropped"] += tok.turns_dropped
    return {"input_ids": tok.input_ids, "labels": tok.labels}, tok.turns


def _system_card(cfg: DataConfig, tokenizer, chat_template: str | None, chat: list) -> dict:
    """What a conversation without a system turn gets: ``data.system_prompt``, and the text the template inserts."""
    return {"setting": cfg.system_prompt, "template_inserts": injected_system_prompt(tokenizer, chat_template),
            "conversations_with_their_own": sum(ex.messages[0]["role"] == "system" for ex in chat)}


def _chat_card(stats: Counter, train: list[dict], own_template: bool) -> dict:
    """The data card's chat section: conversations, turns, truncations, tokens and the assistant share."""
    tokens = sum(len(r["input_ids"]) for r in train)
    assistant = sum(1 for r in train for x in r["labels"] if x != IGNORE_INDEX)
    return {"conversations": stats["conversations"], "turns": stats["turns"],
            "assistant_turns": stats["assistant_turns"], "truncated_conversations": stats["truncated"],
            "turns_dropped_by_truncation": stats["turns_dropped"], "train_tokens": tokens,
            "train_assistant_tokens": assistant, "assistant_token_share": round(assistant / tokens, 4) if tokens else 0.0,
            "template": "data.chat_template" if own_template else "the tokenizer's chat template"}


def _split(texts: list[dict], n_val: int, threshold: float, chat: bool) -> tuple[list[int], list[int], dict | None]:
    """(validation rows, train rows, the card's near-duplicate figures): conversations in near-duplicate groups
    (``data/near_duplicates.py``) stay on one side; other sources take the first ``n_val`` rows."""
    if not chat:
        return list(range(n_val)), list(range(n_val, len(texts))), None
    from ..data.near_duplicates import groups, split_keeping_groups

    # what was said, without a system turn every conversation may share (data.system_prompt)
    said = [" ".join(m["content"] for m in t["messages"] if m["role"] != "system") if "messages" in t
            else f"{t['prompt']} {t['response']}" for t in texts]
    group_of = groups(said, threshold)
    sizes = Counter(group_of)
    val_idx, train_idx = split_keeping_groups(group_of, n_val)
    near = {"threshold": threshold, "groups": sum(n > 1 for n in sizes.values()),
            "conversations_in_groups": sum(n for n in sizes.values() if n > 1), "largest_group": max(sizes.values())}
    if not val_idx:  # one group holds everything: no split keeps it whole; say so, split as before
        log.warning("data prep: every conversation is a near-duplicate of another (one group at Jaccard >= %s): "
                    "the validation split cannot avoid twins in training", threshold)
        return list(range(n_val)), list(range(n_val, len(texts))), {**near, "kept_apart": False}
    return val_idx, train_idx, {**near, "kept_apart": True}


def _stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    s = sorted(lengths)
    return {"mean": round(statistics.fmean(s), 1), "p50": s[len(s) // 2], "p95": s[int(0.95 * (len(s) - 1))],
            "max": s[-1], "total": sum(s)}


def prepare_data(cfg: DataConfig, tokenizer, out_dir: str | Path, progress: bool = False) -> dict:
    """Run the step; returns the data card (also written to ``out_dir/data_card.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples, described = read_source(cfg)
    chat = [ex for ex in examples if ex.messages is not None]
    chat_template = read_chat_template(cfg.chat_template) if cfg.chat_template else None
    if chat:
        check_template(tokenizer, chat_template)
        system = _system_card(cfg, tokenizer, chat_template, chat)
        for ex in chat:  # the system turn training, the held-out answers and the registered model all share
            ex.messages = with_system_prompt(ex.messages, cfg.system_prompt)
    chat_stats: Counter[str] = Counter()
    rng = random.Random(cfg.seed)
    rng.shuffle(examples)
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    rows, texts, tasks = [], [], Counter()
    need = cfg.max_train + cfg.max_validation
    iterator = examples
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(examples, desc="tokenizing", unit="ex")
    for ex in iterator:
        if len(rows) >= need:
            dropped["beyond max_train + max_validation"] += 1
            continue
        key = (ex.prompt, ex.response) if ex.messages is None else ("chat", conversation_key(ex.messages))
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        if ex.messages is not None:
            chat_row = _chat_row(tokenizer, ex.messages, cfg.max_length, chat_template, chat_stats)
            if chat_row is None:
                dropped[f"first assistant turn beyond max_length={cfg.max_length} tokens"] += 1
                continue
            tok, kept_turns = chat_row
        else:
            tok = tokenize_example(tokenizer, ex, cfg.max_length)
        if tok is None:
            dropped[f"longer than max_length={cfg.max_length} tokens or empty response"] += 1
            continue
        rows.append(tok)
        texts.append({"messages": ex.messages[:kept_turns]} if ex.messages is not None else
                     {"prompt": ex.prompt, "response": ex.response})
        tasks[ex.task or "user"] += 1
    if len(rows) < 2:
        raise DataError(f"{described}: fewer than 2 usable records after filtering ({dict(dropped)})")
    # enough rows: exactly max_validation held out; fewer: a tenth of them (at least one)
    n_val = cfg.max_validation if len(rows) >= need else min(cfg.max_validation, max(1, len(rows) // 10))
    val_idx, train_idx, near = _split(texts, n_val, cfg.near_duplicate_threshold, bool(chat))
    validation, train = [rows[i] for i in val_idx], [rows[i] for i in train_idx]
    calibration = train[: cfg.calibration_size]
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "validation.jsonl", validation)
    write_jsonl(out / "validation_text.jsonl", [texts[i] for i in val_idx])  # the held-out evaluation answers these
    write_jsonl(out / "calibration.jsonl", calibration)
    digest = hashlib.sha256()
    for name in ("train.jsonl", "validation.jsonl", "calibration.jsonl"):
        digest.update((out / name).read_bytes())
    card = {
        "source": described,
        "template": cfg.template,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "max_length": cfg.max_length,
        "counts": {"read": len(examples), "train": len(train), "validation": len(validation),
                   "calibration": len(calibration)},
        "tasks": dict(tasks),
        "dropped": dict(dropped),
        "tokens": {"train": _stats([len(r["input_ids"]) for r in train]),
                   "train_response": _stats([sum(1 for x in r["labels"] if x != IGNORE_INDEX) for r in train])},
        "content_hash": "sha256:" + digest.hexdigest(),
    }
    if chat:
        card["chat"] = {**_chat_card(chat_stats, train, chat_template is not None), "system_prompt": system,
                        "near_duplicates": near}
    (out / "data_card.json").write_text(json.dumps(card, indent=2))
    return card


def _system_line(s: dict) -> str:
    """The data card's sentence on the system turn of conversations that have none."""
    own = f" ({s['conversations_with_their_own']} conversations have their own)" if s["conversations_with_their_own"] else ""
    if s["setting"] == "template":
        inserted = (f"the chat template inserts the system prompt \"{s['template_inserts']}\"; set data.system_prompt to "
                    "replace it (or `empty`)") if s["template_inserts"] else "the chat template inserts no system prompt"
        return f"System turn of conversations without one{own}: {inserted}."
    given = "an empty system turn" if s["setting"] == "empty" else f"\"{s['setting']}\" (data.system_prompt)"
    return f"System turn of conversations without one{own}: {given}."


def data_card_markdown(card: dict) -> str:
    template = "" if "chat" in card else f", template `{card['template']}`"  # chat: the chat template's line below
    lines = [f"# Data card\n\nSource: `{card['source']}`{template}, "
             f"content hash `{card['content_hash'][:19]}...`\n", "| split | records |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["counts"].items()]
    if card["dropped"]:
        lines += ["", "| dropped because | records |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in card["dropped"].items()]
    if card["tasks"]:
        lines += ["", "| task | records kept |", "|---|---|"] + [f"| {k} | {v} |" for k, v in card["tasks"].items()]
    if "chat" in card:
        c = card["chat"]
        lines += ["", f"Conversations kept: {c['conversations']} ({c['turns']} turns, {c['assistant_turns']} by the "
                      f"assistant), rendered with {c['template']}; truncated: {c['truncated_conversations']} "
                      f"({c['turns_dropped_by_truncation']} turns dropped). Assistant tokens (the trained ones): "
                      f"{c['train_assistant_tokens']} of {c['train_tokens']} train tokens "
                      f"({100 * c['assistant_token_share']:.1f}%)."]
        lines += ["", _system_line(c["system_prompt"])]
        n = c["near_duplicates"]
        kept = "each group kept on one side of the split" if n["kept_apart"] else \
            "one group holds them all, so the validation split has twins in training"
        lines += ["", f"Near-duplicates (word 3-gram Jaccard >= {n['threshold']}): {n['conversations_in_groups']} "
                      f"conversations in {n['groups']} groups (the largest {n['largest_group']}), {kept}."]
    t = card["tokens"]["train"]
    lines += ["", f"Train tokens per record: mean {t.get('mean')}, p50 {t.get('p50')}, p95 {t.get('p95')}, "
                  f"max {t.get('max')}; total {t.get('total')}."]
    return "\n".join(lines) + "\n"
