"""The chat data path's tokenisation time per 10k conversations, against the plain path in the same run.

    python benchmarks/bench_chat_data.py [--conversations 10000]

Conversations: the identity set (../shared/data/chat, 500 ShareGPT conversations of 2 to 6 turns), each
repeated with a numbered user turn so that all are distinct, rendered with SmolLM2's ChatML template.
Printed, in seconds per 10k conversations:
  * baseline: render each conversation once with the template and tokenize it (no loss mask);
  * chat path: ``tokenize_conversation`` (a render per assistant turn and its opening, offsets, the mask);
  * ratio chat / baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import AutoTokenizer  # noqa: E402

from fora_core.model_source import convert_builtin  # noqa: E402
from pipelines.data.chat import conversation_of, tokenize_conversation  # noqa: E402

IDENTITY = ROOT.parent / "shared" / "data" / "chat" / "identity_conversations.json"


def conversations(n: int) -> list[list[dict]]:
    base = [conversation_of(r, i, IDENTITY.name) for i, r in enumerate(json.loads(IDENTITY.read_text()), 1)]
    return [[*base[i % len(base)], {"role": "user", "content": f"Question {i}?"},
             {"role": "assistant", "content": f"Answer {i}."}] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=10000)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(convert_builtin("smollm2-135m"))
    convs = conversations(args.conversations)
    turns = sum(len(c) for c in convs)

    t = time.perf_counter()
    plain_tokens = sum(len(tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"])
                       for c in convs)
    baseline = time.perf_counter() - t

    t = time.perf_counter()
    rows = [tokenize_conversation(tok, c, max_length=4096) for c in convs]
    chat = time.perf_counter() - t
    assert sum(len(r.input_ids) for r in rows) == plain_tokens  # the same tokens, plus the mask

    per10k = 10000 / len(convs)
    print(f"{len(convs)} conversations, {turns} turns, {plain_tokens} tokens")
    print(f"baseline (render once + tokenize): {baseline * per10k:.1f} s per 10k conversations")
    print(f"chat path (spans + offsets + mask): {chat * per10k:.1f} s per 10k conversations")
    print(f"ratio chat / baseline: {chat / baseline:.2f}x")


if __name__ == "__main__":
    main()
