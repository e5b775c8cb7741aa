"""The user's own lm-eval task YAML, scored by the evaluate step, against a hand computation of its metric;
an lm-eval task by name that cannot be had offline, in one line; the base model's scores from the cache
on the second evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_fixtures import tiny_model_dir

from pipelines.config.errors import RunConfigError
from pipelines.config.evaluation import EvalConfig

QUIZ = [
    {"question": "What color is the sky on a clear day?", "choices": ["blue", "green", "red"], "label": 0},
    {"question": "How many legs does a spider have?", "choices": ["six", "eight"], "label": 1},
    {"question": "Which is a fruit?", "choices": ["carrot", "apple", "potato", "onion"], "label": 1},
    {"question": "What is frozen water called?", "choices": ["steam", "ice"], "label": 1},
    {"question": "Which animal barks?", "choices": ["cat", "dog", "cow"], "label": 1},
    {"question": "What do bees make?", "choices": ["honey", "milk", "silk"], "label": 0},
]

TASK = """task: my_quiz
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _hand_acc(model, tok) -> list[int]:
    """lm-eval's multiple-choice accuracy, computed directly: log p(" " + choice | context), summed over the
    choice's tokens (the context tokenized alone, the choice as what the whole adds), argmax == label."""
    out = []
    for doc in QUIZ:
        context = f"Question: {doc['question']}\nAnswer:"
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            scores.append(sum(logp[t - 1, whole[t]].item() for t in range(len(ctx), len(whole))))
        out.append(int(max(range(len(scores)), key=scores.__getitem__) == doc["label"]))
    return out


def test_a_user_task_yaml_is_scored_as_computed_by_hand_and_the_base_is_cached(tiny, tmp_path):
    from pipelines.steps.evaluate import run_evaluation

    model, tok = tiny
    data = tmp_path / "quiz.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in QUIZ))
    task = tmp_path / "my_tasks" / "quiz.yaml"
    task.parent.mkdir()
    task.write_text(TASK.format(data=data))
    cfg = EvalConfig(tasks=[str(task)], limit=50, batch_size=4, perplexity=False, heldout={"source": ""})
    cache = tmp_path / "cache"
    first = run_evaluation(model, tok, None, tmp_path, cfg, tmp_path / "eval1", cache=str(cache))
    hand = _hand_acc(model, tok)
    base = first["base"]
    assert base["items"]["my_quiz/acc"]["my_quiz"] == hand
    assert base["metrics"]["my_quiz/acc"] == pytest.approx(sum(hand) / len(hand))
    assert base["metrics"]["acc_avg"] == pytest.approx(sum(hand) / len(hand))
    assert not base["from_cache"] and len(list(cache.iterdir())) == 1
    # the same weights on the same suite: taken from the cache, not scored again
    second = run_evaluation(model, tok, None, tmp_path, cfg, tmp_path / "eval2", cache=str(cache))
    assert second["base"]["from_cache"] and second["base"]["metrics"] == base["metrics"]
    assert second["suite"] == first["suite"]
    # another item in the user's file is another suite: scored afresh
    data.write_text("".join(json.dumps(d) + "\n" for d in QUIZ[:-1]))
    third = run_evaluation(model, tok, None, tmp_path, cfg, tmp_path / "eval3", cache=str(cache))
    assert not third["base"]["from_cache"] and third["suite"] != first["suite"]
    assert third["base"]["items"]["my_quiz/acc"]["my_quiz"] == hand[:-1]


def test_tasks_that_cannot_be_had_are_one_line_naming_them(tmp_path):
    from pipelines.evaluation.lm_eval_suite import Suite, check_tasks, prepare_suite, task_manager

    suite = prepare_suite(["sciq"], 4, tmp_path / "tasks")  # an lm-eval task by name: needs its dataset
    manager = task_manager(suite)
    with pytest.raises(RunConfigError) as err:
        check_tasks(suite, manager)
    msg = str(err.value)
    assert "'sciq'" in msg and "could not be loaded" in msg and "\n" not in msg
    with pytest.raises(RunConfigError, match="lm-eval has no task 'no_such_task_xyz'"):
        check_tasks(Suite(names={"no_such_task_xyz": "no_such_task_xyz"}), manager)
    with pytest.raises(RunConfigError, match="not found"):
        prepare_suite([str(tmp_path / "missing.yaml")], 4, tmp_path / "t2")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.yaml").write_text("just: a mapping\n")
    with pytest.raises(RunConfigError, match="holds no lm-eval task YAML"):
        prepare_suite([str(tmp_path / "empty")], 4, tmp_path / "t3")
