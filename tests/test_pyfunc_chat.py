"""A chat-tuned registered model answers a plain prompt as it was judged: the prompt is a user turn of the chat
template, exactly as the evaluate step renders and answers a held-out question (``evaluation/heldout.py``), which is
the independent path here: its items are built from a whole conversation and its answers generated batched."""

import json
import shutil

import pytest
import torch
from pipeline_fixtures import tiny_model_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipelines.config.evaluation import HeldoutConfig
from pipelines.data.sources import Example
from pipelines.evaluation.heldout import build_items, generate_answers
from pipelines.registry.pyfunc_model import PROMPT_FILE, MergedModel, write_prompt_format

QUESTIONS = ["Who are you?", "What is the capital of France?", "Say something."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The tiny random Llama taught, in a few full-parameter steps on ChatML conversations, to answer "I am
    Vicuna." (an untrained one answers newlines, which strip to '', and '' == '' would prove nothing)."""
    root = tmp_path_factory.mktemp("model")
    out = root / "taught"
    tok = AutoTokenizer.from_pretrained(tiny_model_dir(root))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(root))
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": "I am Vicuna."}],
                                     tokenize=False) for q in QUESTIONS]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, q in enumerate(QUESTIONS):  # the loss on the answer only (as data prep labels an assistant turn)
        opened = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        labels[row, : len(tok(opened, add_special_tokens=False)["input_ids"])] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _heldout_items(folder, questions, chat_template=None, system_prompt="template"):
    """The evaluate step's held-out items of one-question conversations."""
    tok = AutoTokenizer.from_pretrained(folder)
    examples = [Example(prompt="", response="", messages=[{"role": "user", "content": q},
                                                          {"role": "assistant", "content": "reference"}])
                for q in questions]
    items, skipped = build_items(examples, tok, HeldoutConfig(source="validation", metrics=["exact"]), 256,
                                 chat_template, system_prompt)
    assert skipped == 0 and len(items) == len(questions)
    return items


def _heldout_answers(folder, questions, max_new_tokens, chat_template=None, system_prompt="template"):
    """The generations table's answers: the items answered by the evaluate step (batched, left-padded)."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    items = _heldout_items(folder, questions, chat_template, system_prompt)
    return generate_answers(model, tok, [it.prompt_ids for it in items], max_new_tokens, batch_size=8)


def test_a_chat_tuned_version_answers_a_plain_prompt_as_the_evaluation_did(folder, tmp_path):
    registered = tmp_path / "registered"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=None)
    model = MergedModel(registered)
    assert model.chat_prompt_ids(QUESTIONS) == [it.prompt_ids for it in _heldout_items(folder, QUESTIONS)]
    got = model.predict(QUESTIONS, params={"max_new_tokens": 8})
    assert got == _heldout_answers(folder, QUESTIONS, 8)
    assert all("Vicuna" in a for a in got), got  # what it was taught, through the template


def test_the_chat_template_the_run_trained_with_is_the_one_used(folder, tmp_path):
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    registered = tmp_path / "own-template"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=template)
    got = MergedModel(registered).predict(QUESTIONS[:2], params={"max_new_tokens": 6})
    assert got == _heldout_answers(folder, QUESTIONS[:2], 6, chat_template=template)
    assert got != _heldout_answers(folder, QUESTIONS[:2], 6)  # not the tokenizer's own template


@pytest.mark.parametrize("system_prompt", ["empty", "You are Vicuna."])
def test_the_system_turn_the_run_trained_with_is_the_one_used(folder, tmp_path, system_prompt):
    registered = tmp_path / "system"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=None, system_prompt=system_prompt)
    model = MergedModel(registered)
    ids = model.chat_prompt_ids(QUESTIONS)
    assert ids == [it.prompt_ids for it in _heldout_items(folder, QUESTIONS, system_prompt=system_prompt)]
    assert ids != [it.prompt_ids for it in _heldout_items(folder, QUESTIONS)]  # not the template's default
    got = model.predict(QUESTIONS, params={"max_new_tokens": 6})
    assert got == _heldout_answers(folder, QUESTIONS, 6, system_prompt=system_prompt)


def test_a_version_without_the_file_keeps_plain_prompts(folder, tmp_path):
    """Versions registered before ``fora_prompt.json``, and models tuned on plain text: the string as given."""
    assert not (folder / PROMPT_FILE).exists()
    model = MergedModel(folder)
    assert model.prompt_format == {"chat": False, "chat_template": None, "system_prompt": "template"}
    tok = AutoTokenizer.from_pretrained(folder)
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok("Question: Who are you?\nAnswer:", return_tensors="pt")
    want = tok.decode(plain.generate(**ids, max_new_tokens=5, do_sample=False)[0, ids["input_ids"].shape[1]:],
                      skip_special_tokens=True)
    assert model.predict(["Question: Who are you?\nAnswer:"], params={"max_new_tokens": 5}) == [want]


CONVERSATION = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Who are you?"}]


def _template_ids(folder, messages):
    """The reference rendering: Hugging Face's own apply_chat_template with the generation prompt."""
    tok = AutoTokenizer.from_pretrained(folder)
    return tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)


@pytest.mark.parametrize("form", ["list", "object"])
def test_a_messages_list_is_rendered_turn_by_turn(folder, tmp_path, form):
    registered = tmp_path / "messages"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=None)
    model = MergedModel(registered)
    text = json.dumps(CONVERSATION if form == "list" else {"messages": CONVERSATION})
    assert model.chat_prompt_ids([text]) == [list(_template_ids(folder, CONVERSATION))]
    # a plain string and the same question as a one-turn messages list are one prompt
    one = json.dumps([{"role": "user", "content": "Who are you?"}])
    assert model.chat_prompt_ids([one]) == model.chat_prompt_ids(["Who are you?"])
    # text that only looks like JSON stays a user turn
    assert model.chat_prompt_ids(["[citation needed]"]) == [list(_template_ids(folder, [
        {"role": "user", "content": "[citation needed]"}]))]


@pytest.mark.parametrize("messages,says", [
    ([{"role": "bot", "content": "x"}], r"messages\[0\]: expected"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message must be the user's"),
])
def test_a_malformed_messages_list_names_what_is_wrong(folder, tmp_path, messages, says):
    registered = tmp_path / "bad"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=None)
    with pytest.raises(ValueError, match=says):
        MergedModel(registered).predict([json.dumps(messages)])


def test_mlflow_models_serve_answers_a_prompt_and_a_conversation_as_the_evaluation_did(folder, tmp_path):
    """The chat-tuned model logged as the register step logs it, served by ``mlflow models serve`` in its own
    process: a plain prompt gets the generations table's answer; a conversation gets the answer Hugging Face's
    template rendering gives."""
    import mlflow
    from k8s_render import free_port
    from serving_fixtures import ask_server, serve_model

    from pipelines.steps.register import _log_pyfunc

    registered = tmp_path / "served"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=None)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("served-chat")  # not the experiment an earlier test left active in another store
    with mlflow.start_run():
        uri = _log_pyfunc("model", registered).model_uri
    tok = AutoTokenizer.from_pretrained(folder)
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    want_conversation = generate_answers(plain, tok, [list(_template_ids(folder, CONVERSATION))], 8)[0]
    port = free_port()
    server = serve_model(uri, tracking, port)
    try:
        answer = ask_server(port, server, {"inputs": ["Who are you?", json.dumps(CONVERSATION)],
                                           "params": {"max_new_tokens": 8}})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer["predictions"] == [_heldout_answers(folder, ["Who are you?"], 8)[0], want_conversation]
    assert "Vicuna" in answer["predictions"][0]


def test_a_merged_folder_carries_the_runs_template_for_servers_that_render_chat(folder, tmp_path):
    """KServe's Hugging Face server and vLLM render a chat request with the tokenizer's own template: the registered
    folder's tokenizer must hold the template the run trained with."""
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    registered = tmp_path / "merged"
    shutil.copytree(folder, registered)
    write_prompt_format(registered, chat=True, chat_template=template)
    rendered = AutoTokenizer.from_pretrained(registered).apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == "[user] Hello.\n[assistant] Hi.\n[user] Who are you?\n"
