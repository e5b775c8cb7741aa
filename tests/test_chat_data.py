"""Chat data (pipelines/data/chat.py): the loss mask against token positions built by hand from each
template's pieces, for SmolLM2's own ChatML template, a Llama-3 template and a Gemma template; against
transformers' own ``return_assistant_tokens_mask`` for a template with ``{% generation %}`` markers;
truncation; the two record forms; bad records; and the data prep step on the identity conversations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from fora_core.fisher import IGNORE_INDEX
from fora_core.model_source import convert_builtin
from pipelines.config.errors import DataError
from pipelines.config.run_config import DataConfig
from pipelines.data.chat import conversation_of, injected_system_prompt, tokenize_conversation
from pipelines.steps.data_prep import data_card_markdown, prepare_data

IDENTITY = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat" / "identity_conversations.json"

# Meta-Llama-3-8B-Instruct's template (tokenizer_config.json), verbatim.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Gemma's text template (Gemma 2's turn markup, Gemma 3's system message folded into the first user turn).
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = "
         "messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}"
         "{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
         "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
         "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
         "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
         "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
# ChatML with generation markers (as in SmolLM3 / Qwen templates prepared for assistant masks).
CHATML_GENERATION = ("{% for message in messages %}{% if message['role'] == 'assistant' %}"
                     "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
                     "{% endgeneration %}{{ '\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\n' + "
                     "message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Vicuna, trained by LMSYS."},
    {"role": "user", "content": "Have a nice day!"},
    {"role": "assistant", "content": "You too!"},
]


@pytest.fixture(scope="module")
def smollm():
    return AutoTokenizer.from_pretrained(convert_builtin("smollm2-135m"))


def with_special(tokenizer, tokens: list[str]):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    return tok


def enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def hand_chatml(tok, messages) -> tuple[list[int], list[int]]:
    """SmolLM2's template by hand: <|im_start|> role \\n content <|im_end|> \\n per message; the assistant's
    content and its <|im_end|> are trained."""
    start, end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids, labels = [], []
    for m in messages:
        head, body, tail = [start] + enc(tok, m["role"] + "\n"), enc(tok, m["content"]) + [end], enc(tok, "\n")
        ids += head + body + tail
        trained = m["role"] == "assistant"
        labels += [IGNORE_INDEX] * len(head) + (body if trained else [IGNORE_INDEX] * len(body)) + [IGNORE_INDEX] * len(tail)
    return ids, labels


def hand_llama3(tok, messages) -> tuple[list[int], list[int]]:
    sh, eh, eot = tok.convert_tokens_to_ids(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    ids, labels = [tok.bos_token_id], [IGNORE_INDEX]
    for m in messages:
        # "\n\n" before the content is split by the pre-tokenizer as it is in the whole text ("\n", "\n")
        content = enc(tok, m["content"].strip())
        joined = enc(tok, "\n\n" + m["content"].strip())
        assert joined[-len(content):] == content
        head = [sh] + enc(tok, m["role"]) + [eh] + joined[: -len(content)]
        body = content + [eot]
        ids += head + body
        labels += [IGNORE_INDEX] * len(head) + (body if m["role"] == "assistant" else [IGNORE_INDEX] * len(body))
    return ids, labels


def hand_gemma(tok, messages) -> tuple[list[int], list[int]]:
    sot, eot = tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    ids, labels = [tok.bos_token_id], [IGNORE_INDEX]
    for i, m in enumerate(turns):
        role = "model" if m["role"] == "assistant" else m["role"]
        if m["role"] == "assistant":
            head, body = [sot] + enc(tok, role + "\n"), enc(tok, m["content"].strip()) + [eot]
        else:  # the user's text (and the system text before the first one) is one untrained piece
            head, body = [sot] + enc(tok, role + "\n" + (system if i == 0 else "") + m["content"].strip()) + [eot], []
        tail = enc(tok, "\n")
        ids += head + body + tail
        labels += [IGNORE_INDEX] * len(head) + body + [IGNORE_INDEX] * len(tail)
    return ids, labels


def test_smollm2_chatml_mask_matches_the_hand_built_positions(smollm):
    got = tokenize_conversation(smollm, CONVERSATION, max_length=512)
    ids, labels = hand_chatml(smollm, CONVERSATION)
    assert got.input_ids == ids
    assert got.labels == labels
    trained = [smollm.decode([t]) for t in got.labels if t != IGNORE_INDEX]
    assert "".join(trained) == "I am Vicuna, trained by LMSYS.<|im_end|>You too!<|im_end|>"


def test_llama3_template_mask(smollm):
    tok = with_special(smollm, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    got = tokenize_conversation(tok, CONVERSATION, max_length=512, chat_template=LLAMA3)
    ids, labels = hand_llama3(tok, CONVERSATION)
    assert got.input_ids == ids and got.labels == labels


def test_gemma_template_mask_with_the_system_message_in_the_first_user_turn(smollm):
    tok = with_special(smollm, ["<start_of_turn>", "<end_of_turn>"])
    got = tokenize_conversation(tok, CONVERSATION, max_length=512, chat_template=GEMMA)
    ids, labels = hand_gemma(tok, CONVERSATION)
    assert got.input_ids == ids and got.labels == labels
    assert tok.decode([t for t in got.labels if t != IGNORE_INDEX]) == (
        "I am Vicuna, trained by LMSYS.<end_of_turn>You too!<end_of_turn>")


def test_a_template_with_generation_markers_agrees_with_transformers_assistant_mask(smollm):
    """A second algorithm: transformers' own mask from the {% generation %} markers."""
    ref = smollm.apply_chat_template(CONVERSATION, chat_template=CHATML_GENERATION, tokenize=True,
                                     return_dict=True, return_assistant_tokens_mask=True)
    got = tokenize_conversation(smollm, CONVERSATION, max_length=512, chat_template=CHATML_GENERATION)
    assert got.input_ids == list(ref["input_ids"])
    assert [t != IGNORE_INDEX for t in got.labels] == [bool(m) for m in ref["assistant_masks"]]


def test_sharegpt_and_messages_give_the_same_tokens(smollm):
    role = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = {"conversations": [{"from": role[m["role"]], "value": m["content"]} for m in CONVERSATION]}
    a = tokenize_conversation(smollm, conversation_of({"messages": CONVERSATION}, 1, "f.json"), 512)
    b = tokenize_conversation(smollm, conversation_of(sharegpt, 1, "f.json"), 512)
    assert (a.input_ids, a.labels) == (b.input_ids, b.labels)


def test_truncation_keeps_whole_turns_up_to_the_last_assistant_turn_that_fits(smollm):
    full_ids, full_labels = hand_chatml(smollm, CONVERSATION)
    first_turn_ids, _ = hand_chatml(smollm, CONVERSATION[:3])
    first_end = len(first_turn_ids) - 1  # one past the first assistant turn's <|im_end|> (its "\n" not kept)
    got = tokenize_conversation(smollm, CONVERSATION, max_length=len(full_ids) - 2)
    assert got.input_ids == full_ids[:first_end] and got.labels == full_labels[:first_end]
    assert (got.turns, got.turns_dropped) == (3, 2)
    assert got.labels[-1] == smollm.convert_tokens_to_ids("<|im_end|>")
    assert tokenize_conversation(smollm, CONVERSATION, max_length=first_end - 1) is None  # no assistant token fits
    assert tokenize_conversation(smollm, CONVERSATION, max_length=first_end).turns == 3


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "f.json row 7: messages[0]: unknown role 'robot'"),
    ({"messages": []}, "f.json row 7: field 'messages' is an empty conversation"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "f.json row 7: no assistant turn"),
    ({"messages": [{"role": "user", "content": 3}]}, "f.json row 7: messages[0]: field 'content' is not a string"),
    ({"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}]},
     "f.json row 7: the assistant speaks first"),
    ({"chat": []}, "f.json row 7: a chat record needs a 'messages' list"),
])
def test_bad_chat_records_name_the_file_row_and_field(record, message):
    with pytest.raises(DataError) as err:
        conversation_of(record, 7, "f.json")
    assert str(err.value).startswith(message)


def test_a_model_without_a_template_is_one_line(smollm, tmp_path):
    tok = copy.deepcopy(smollm)
    tok.chat_template = None
    data = tmp_path / "chat.jsonl"
    variants = [[*CONVERSATION[:3], {"role": "user", "content": f"Thanks {i}"}, CONVERSATION[4]] for i in range(3)]
    data.write_text("\n".join(json.dumps({"messages": m}) for m in [*variants, variants[0]]))
    with pytest.raises(DataError, match="has no chat template: set data.chat_template"):
        prepare_data(DataConfig(source=str(data), max_validation=1), tok, tmp_path / "out")
    template = tmp_path / "chatml.jinja"
    template.write_text(smollm.chat_template)
    with pytest.raises(DataError, match="template file not found"):
        prepare_data(DataConfig(source=str(data), chat_template=str(tmp_path / "nope.jinja")), tok, tmp_path / "o")
    card = prepare_data(DataConfig(source=str(data), chat_template=str(template), max_validation=1), tok,
                        tmp_path / "out")
    assert card["chat"]["template"] == "data.chat_template"
    assert card["dropped"] == {"duplicate": 1} and card["chat"]["conversations"] == 3


def test_identity_conversations_through_data_prep(smollm, tmp_path):
    records = json.loads(IDENTITY.read_text())
    card = prepare_data(DataConfig(source=str(IDENTITY), max_length=256, max_train=400, max_validation=50),
                        smollm, tmp_path)
    chat = card["chat"]
    unique = {json.dumps(r["conversations"], sort_keys=True) for r in records}
    assert chat["conversations"] + card["dropped"].get("duplicate", 0) + \
        card["dropped"].get("beyond max_train + max_validation", 0) == len(records)
    assert chat["conversations"] == min(len(unique), 450)
    assert chat["truncated_conversations"] == 0 and chat["turns"] % 2 == 0
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    # every row: the trained tokens are exactly the assistant turns, each ending in <|im_end|>
    end = smollm.convert_tokens_to_ids("<|im_end|>")
    for row in train[:50]:
        trained = [t for t in row["labels"] if t != IGNORE_INDEX]
        text = smollm.decode(row["input_ids"])
        assert trained and trained[-1] == end
        assert smollm.decode(trained).count("<|im_end|>") == text.count("<|im_start|>assistant")
    assert 0 < chat["assistant_token_share"] < 0.6
    assert chat["train_assistant_tokens"] == sum(t != IGNORE_INDEX for r in train for t in r["labels"])


def test_chat_settings_are_checked_before_any_work(tmp_path):
    from pipelines.config.run_config import RunConfig
    from pipelines.preflight.checks import check_data

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    run = RunConfig.from_dict({"data": {"source": str(data), "format": "chat",
                                        "chat_template": str(tmp_path / "missing.jinja")}})
    with pytest.raises(DataError, match="data.chat_template: template file not found"):
        check_data(run)
    with pytest.raises(DataError, match="data file not found"):
        check_data(RunConfig.from_dict({"data": {"source": str(tmp_path / "nope.jsonl"), "format": "chat"}}))
    with pytest.raises(DataError, match="does not apply to data.source 'builtin:commonsense'"):
        check_data(RunConfig.from_dict({"data": {"format": "chat"}}))


SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # SmolLM2's template text


def test_the_system_prompt_a_template_inserts_is_found(smollm):
    assert injected_system_prompt(smollm) == SMOLLM_DEFAULT
    llama3 = with_special(smollm, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    assert injected_system_prompt(llama3, LLAMA3) is None  # no system block without a system turn
    gemma = with_special(smollm, ["<start_of_turn>", "<end_of_turn>"])
    assert injected_system_prompt(gemma, GEMMA) is None  # a system turn goes into the first user turn


@pytest.mark.parametrize("setting, inserted, said", [
    ("template", SMOLLM_DEFAULT, f'the chat template inserts the system prompt "{SMOLLM_DEFAULT}"'),
    ("empty", None, "an empty system turn"),
    ("You are Vicuna, trained by LMSYS.", "You are Vicuna, trained by LMSYS.",
     '"You are Vicuna, trained by LMSYS." (data.system_prompt)'),
])
def test_data_system_prompt_sets_or_removes_what_training_and_held_out_answers_see(smollm, tmp_path, setting,
                                                                                   inserted, said):
    data = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(6)]
    rows.append({"messages": [{"role": "system", "content": "Own."}, *rows[0]["messages"]]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = prepare_data(DataConfig(source=str(data), max_validation=2, system_prompt=setting), smollm, tmp_path / "o")
    assert card["chat"]["system_prompt"] == {"setting": setting, "template_inserts": SMOLLM_DEFAULT,
                                             "conversations_with_their_own": 1}
    assert said in data_card_markdown(card) and "(1 conversations have their own)" in data_card_markdown(card)
    texts = [smollm.decode(json.loads(line)["input_ids"]) for line in (tmp_path / "o" / "train.jsonl").open()]
    texts += [smollm.decode(json.loads(line)["input_ids"]) for line in (tmp_path / "o" / "validation.jsonl").open()]
    own = [t for t in texts if "Own." in t]
    others = [t for t in texts if "Own." not in t]
    assert len(own) == 1 and len(others) == 6 and SMOLLM_DEFAULT not in own[0]
    for text in others:  # what the model trained on, and the held-out conversations the evaluation answers
        system = text.split("<|im_start|>user")[0]
        assert (inserted in system) if inserted else system == "<|im_start|>system\n<|im_end|>\n"
        if inserted != SMOLLM_DEFAULT:
            assert SMOLLM_DEFAULT not in text
    held_out = [json.loads(line) for line in (tmp_path / "o" / "validation_text.jsonl").open()]
    assert all(h["messages"][0]["role"] == "system" for h in held_out) == (setting != "template")


def test_no_held_out_conversation_has_a_near_duplicate_in_training(smollm, tmp_path):
    """The identity conversations are templated: split at random, most held-out ones have a near-twin in training.
    Every conversation is kept here, so training is what validation is not; checked pair by pair (brute force)."""
    from pipelines.data.near_duplicates import jaccard, shingles

    records = json.loads(IDENTITY.read_text())
    card = prepare_data(DataConfig(source=str(IDENTITY), max_length=256, max_train=1000, max_validation=50), smollm,
                        tmp_path)
    said = {json.dumps([t["value"] for t in r["conversations"]]) for r in records}
    held = [json.loads(line)["messages"] for line in (tmp_path / "validation_text.jsonl").open()]
    held_said = {json.dumps([m["content"] for m in h]) for h in held}
    assert len(held) == card["counts"]["validation"] == 50 and held_said <= said
    train = [shingles(" ".join(json.loads(s))) for s in said - held_said]
    assert len(train) == card["counts"]["train"]
    for h in held:
        text = shingles(" ".join(m["content"] for m in h))
        assert max(jaccard(text, t) for t in train) < 0.8
    near = card["chat"]["near_duplicates"]
    assert near["threshold"] == 0.8 and near["groups"] > 0 and near["largest_group"] > 50
    assert "each group kept on one side of the split" in data_card_markdown(card)


def test_conversations_that_are_all_one_near_duplicate_group_still_split_and_the_card_says_so(smollm, tmp_path):
    data = tmp_path / "same.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Who are you, my friend, tell me now please?"},
                          {"role": "assistant", "content": f"I am Vicuna, a model trained by LMSYS ({i})."}]}
            for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = prepare_data(DataConfig(source=str(data), max_validation=2, near_duplicate_threshold=0.5), smollm,
                        tmp_path / "o")
    near = card["chat"]["near_duplicates"]
    assert near["groups"] == 1 and near["largest_group"] == 12 and near["kept_apart"] is False
    assert card["counts"]["validation"] == 1 and "has twins in training" in data_card_markdown(card)  # 12 // 10
