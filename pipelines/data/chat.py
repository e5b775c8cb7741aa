"""Chat data: multi-turn conversations rendered with the model's own chat template, loss on every assistant
turn and nothing else.

Two record forms are read (and detected by ``data.format: auto``):

* OpenAI / Hugging Face: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
* ShareGPT: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``

**Which tokens are trained.** A conversation m_1..m_n is rendered once, F = template(m_1..m_n), and
tokenized with character offsets (a fast tokenizer). For every assistant turn i the template is also
rendered up to the turn's opening and through the turn:

    P_i = template(m_1..m_{i-1}, add_generation_prompt=True)      # ends with the assistant header
    Q_i = template(m_1..m_i)                                      # ends after the turn's end-of-turn text

and the turn's trained characters are [len(P_i), len(rstrip(Q_i))): the content and the template's
end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), without the whitespace after it.
A token is trained when its characters overlap such a span; every other token (system and user turns,
role headers, the template's own preamble) gets the label -100. This needs no ``{% generation %}`` markers,
so it works for templates with and without them; it needs the template to render a conversation's
prefixes as prefixes of the whole (P_i a prefix of Q_i, Q_i a prefix of F), which is checked per record.

**Truncation** (``data.max_length``): a conversation longer than the limit keeps its first turns, cut
right after the last assistant turn that still ends within the limit; the turns after it are dropped and
counted. A conversation whose first assistant turn does not fit is dropped and counted. No example is ever
kept without an assistant token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fora_core.fisher import IGNORE_INDEX

from ..config.errors import DataError

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "chatgpt": "assistant", "bard": "assistant", "bing": "assistant"}
"""Role names accepted in records (ShareGPT's ``from`` values included) and the role each is rendered as."""
FORMS = (("messages", "role", "content"), ("conversations", "from", "value"))
"""(list field, role field, text field) of the OpenAI/HF form and of ShareGPT's."""


def is_chat_record(record: Any) -> bool:
    return isinstance(record, dict) and any(isinstance(record.get(field), list) for field, _, _ in FORMS)


def conversation_of(record: Any, row: int, where: str) -> list[dict[str, str]]:
    """A record's turns as ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``; a malformed record
    is a :class:`DataError` naming the file, the row and the field."""
    if not isinstance(record, dict):
        raise DataError(f"{where} row {row}: expected an object with 'messages' or 'conversations', got "
                        f"{type(record).__name__}")
    form = next(((f, r, t) for f, r, t in FORMS if f in record), None)
    if form is None:
        raise DataError(f"{where} row {row}: a chat record needs a 'messages' list (role, content) or a "
                        "'conversations' list (from, value)")
    field, role_key, text_key = form
    turns = record[field]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where} row {row}: field '{field}' is an empty conversation" if isinstance(turns, list)
                        else f"{where} row {row}: field '{field}' is not a list")
    messages = []
    for i, turn in enumerate(turns):
        at = f"{where} row {row}: {field}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(f"{at} is not an object with '{role_key}' and '{text_key}'")
        role, text = turn.get(role_key), turn.get(text_key)
        if role not in ROLES:
            raise DataError(f"{at}: unknown role {role!r} in '{role_key}' (allowed: {', '.join(ROLES)})")
        if not isinstance(text, str):
            raise DataError(f"{at}: field '{text_key}' is " + ("missing" if text is None else
                                                               f"not a string ({type(text).__name__})"))
        messages.append({"role": ROLES[role], "content": text})
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        raise DataError(f"{where} row {row}: a system message may only open the conversation "
                        f"({field}[{roles.index('system', 1)}])")
    if "assistant" not in roles:
        raise DataError(f"{where} row {row}: no assistant turn (the loss is on assistant turns; roles: "
                        f"{', '.join(roles)})")
    first_assistant = roles.index("assistant")
    if "user" not in roles[:first_assistant]:
        raise DataError(f"{where} row {row}: the assistant speaks first ({field}[{first_assistant}]); a user "
                        "turn must come before it")
    return messages


def conversation_key(messages: list[dict[str, str]]) -> str:
    """A stable text key of a conversation (for de-duplication)."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


SYSTEM_FROM_TEMPLATE = "template"
SYSTEM_EMPTY = "empty"


def with_system_prompt(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """``messages`` with ``data.system_prompt`` as their system turn when they have none: ``template`` leaves them
    to the chat template, ``empty`` gives an empty system turn, any other text is the turn's content."""
    if system_prompt == SYSTEM_FROM_TEMPLATE or (messages and messages[0]["role"] == "system"):
        return messages
    content = "" if system_prompt == SYSTEM_EMPTY else system_prompt
    return [{"role": "system", "content": content}, *messages]


def injected_system_prompt(tokenizer, chat_template: str | None = None) -> str | None:
    """The system text the template writes into a conversation that has no system turn, or None.

    With T = render([user: U]) and T' = render([system: S, user: U]) = P + S + Q for marker strings S and U, a
    template that inserts a default D renders T = P + D + Q; one that inserts nothing renders T without P."""
    marker_s, marker_u = "\x00SYSTEM-MARKER\x00", "\x00USER-MARKER\x00"
    plain = render_conversation(tokenizer, [{"role": "user", "content": marker_u}], chat_template)
    with_system = render_conversation(tokenizer, [{"role": "system", "content": marker_s},
                                                  {"role": "user", "content": marker_u}], chat_template)
    if marker_s not in with_system:
        return None
    head, tail = with_system.split(marker_s, 1)
    if not head or not plain.startswith(head) or not plain.endswith(tail) or len(plain) < len(head) + len(tail):
        return None
    return plain[len(head) : len(plain) - len(tail)]


def read_chat_template(path: str) -> str:
    """The Jinja text of ``data.chat_template`` (a file)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.chat_template: template file not found: {file}")
    return file.read_text(encoding="utf-8")


def check_template(tokenizer, chat_template: str | None) -> None:
    """A chat source needs a template: the tokenizer's own, or ``data.chat_template``; and character offsets."""
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"the data are conversations, but the tokenizer of {getattr(tokenizer, 'name_or_path', '')!r}"
                        " has no chat template: set data.chat_template to a Jinja template file")
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("chat data need a fast tokenizer (character offsets); this model's tokenizer is a slow one")


def render_conversation(tokenizer, messages: list[dict], chat_template: str | None,
                        generation_prompt: bool = False) -> str:
    """``messages`` as the chat template writes them (with the assistant's opening when ``generation_prompt``)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         chat_template=chat_template)


def assistant_spans(tokenizer, messages: list[dict[str, str]], chat_template: str | None = None
                    ) -> tuple[str, list[tuple[int, int]]]:
    """(F, [(start, end) character span of each assistant turn in F]), as in the module docstring."""
    full = render_conversation(tokenizer, messages, chat_template)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        opened = render_conversation(tokenizer, messages[:i], chat_template, generation_prompt=True)
        through = render_conversation(tokenizer, messages[: i + 1], chat_template)
        if not through.startswith(opened) or not full.startswith(through):
            raise DataError("the chat template does not render a conversation's first turns as the start of the "
                            f"whole (at turn {i}), so the assistant turns cannot be located; use a template that "
                            "does (data.chat_template)")
        spans.append((len(opened), len(through.rstrip())))
    return full, spans


@dataclass
class ChatTokens:
    input_ids: list[int]
    labels: list[int]
    turns: int
    """Turns kept (all roles)."""
    turns_dropped: int
    """Turns cut by the truncation policy."""


def tokenize_conversation(tokenizer, messages: list[dict[str, str]], max_length: int,
                          chat_template: str | None = None) -> ChatTokens | None:
    """Token ids and labels (-100 off the assistant turns) of one conversation, truncated by the module's
    policy; None when not even the first assistant turn fits in ``max_length`` tokens."""
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    turn_ends = []  # per assistant turn: one past its last trained token
    for start, end in spans:
        last = -1
        for t, (a, b) in enumerate(offsets):
            if a < end and b > start and b > a:
                labels[t] = ids[t]
                last = t
        turn_ends.append(last + 1)
    assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(ids) <= max_length:
        return ChatTokens(ids, labels, len(messages), 0)
    fitting = [k for k, end in enumerate(turn_ends) if 0 < end <= max_length]
    if not fitting:
        return None
    k = fitting[-1]
    cut = turn_ends[k]
    kept_turns = assistant_at[k] + 1
    return ChatTokens(ids[:cut], labels[:cut], kept_turns, len(messages) - kept_turns)
