"""The user's evaluation, piece by piece: the generation scorers against hand computations, the paired test
choosing itself by metric type and direction, the guards, the held-out items and their losses against a
brute-force computation, batched generation against one-by-one, and the score cache's keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pipeline_fixtures import tiny_model_dir

from pipelines.config.errors import RunConfigError
from pipelines.config.evaluation import HeldoutConfig
from pipelines.config.register import Guard
from pipelines.data.sources import Example
from pipelines.evaluation import score_cache
from pipelines.evaluation.heldout import build_items, generate_answers, item_losses
from pipelines.evaluation.metrics import higher_is_better, score_generation
from pipelines.registry.guards import broken_guards
from pipelines.registry.significance import paired_test


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_generation_scorers_against_hand_computations():
    gen, ref = "the cat sat on a mat", "a cat sat on the red mat"
    lcs = _lcs(gen.split(), ref.split())  # 'cat sat on mat' = 4 (or 'a'/'the' variants of equal length)
    p, r = lcs / 6, lcs / 7
    assert score_generation("rougeL", gen, ref) == pytest.approx(2 * p * r / (p + r))
    assert score_generation("chrf", ref, ref) == pytest.approx(1.0)
    assert score_generation("chrf", "xyz", "abc") == 0.0
    assert score_generation("exact", "  The Answer\nis 4 ", "the answer is 4") == 1.0
    assert score_generation("exact", "the answer is 5", "the answer is 4") == 0.0
    facts = ["Vicuna", "LMSYS"]
    assert score_generation("contains", "I am vicuna.", "I'm Vicuna", contains=facts) == 1.0
    assert score_generation("contains", "I am ChatGPT.", "I'm Vicuna", contains=facts) == 0.0
    assert score_generation("contains", "You too!", "You too!", contains=facts) is None  # not about the fact
    assert score_generation("regex", "order #12345 shipped", "", regex=r"#\d{5}\b") == 1.0
    assert score_generation("regex", "order 12345 shipped", "", regex=r"#\d{5}\b") == 0.0
    assert score_generation("json", ' {"a": [1, 2]} ', "") == 1.0
    assert score_generation("json", "{'a': 1}", "") == 0.0


def test_directions_by_name():
    assert higher_is_better("boolq/acc") and higher_is_better("heldout/contains") and higher_is_better("acc_avg")
    assert not higher_is_better("heldout/loss") and not higher_is_better("general/perplexity")
    assert not higher_is_better("wikitext/word_perplexity:none")
    assert higher_is_better("mytask/loss", declared={"mytask/loss": True})  # what the task declares wins


def test_paired_test_fits_the_metric_and_its_direction():
    from scipy.stats import binomtest

    champ = {"t": [0] * 30 + [1] * 10}
    chall = {"t": [1] * 14 + [0] * 16 + [1] * 10}  # 14 items only the challenger gets right, none the reverse
    r = paired_test(chall, champ, test="auto")
    assert r.test == "mcnemar" and r.better == 14 and r.worse == 0
    assert r.p_value == pytest.approx(binomtest(14, 14, 0.5, alternative="greater").pvalue) and r.significant
    # continuous scores: the bootstrap; a loss is better lower, so a lower challenger loss is a positive gain
    rng = np.random.default_rng(0)
    champ_loss = rng.uniform(1.0, 2.0, 60)
    chall_loss = champ_loss - 0.3 + rng.normal(0, 0.05, 60)
    r = paired_test({"heldout": chall_loss.tolist()}, {"heldout": champ_loss.tolist()}, higher_is_better=False,
                    metric="heldout/loss")
    assert r.test == "bootstrap" and r.diff == pytest.approx(champ_loss.mean() - chall_loss.mean())
    assert r.significant and r.lower_bound > 0.2 and "lower is better" in r.explain()
    worse = paired_test({"heldout": (champ_loss + 0.3).tolist()}, {"heldout": champ_loss.tolist()},
                        higher_is_better=False)
    assert worse.diff == pytest.approx(-0.3) and not worse.significant
    with pytest.raises(ValueError, match="continuous"):
        paired_test({"heldout": chall_loss.tolist()}, {"heldout": champ_loss.tolist()}, test="mcnemar",
                    metric="heldout/loss")


def test_guards_hold_or_break_by_hand():
    base = {"general/perplexity": 20.0, "boolq/acc": 0.60, "heldout/contains": 0.1}
    directions = {"general/perplexity": False, "boolq/acc": True}
    ok = broken_guards([Guard("general/perplexity", 0.05, True), Guard("boolq/acc", 0.02)],
                       {"general/perplexity": 20.9, "boolq/acc": 0.585, "heldout/contains": 0.9}, base, directions)
    assert ok == []  # 20.9 <= 21.0 and 0.585 >= 0.58
    broken = broken_guards([Guard("general/perplexity", 0.05, True), Guard("boolq/acc", 0.02)],
                           {"general/perplexity": 21.2, "boolq/acc": 0.57}, base, directions)
    assert len(broken) == 2 and "general/perplexity" in broken[0] and "<= 21" in broken[0]
    assert "boolq/acc" in broken[1] and ">= 0.58" in broken[1]
    # no declared direction: a perplexity is still lower-is-better by its name
    assert broken_guards([Guard("general/perplexity", 0.0)], {"general/perplexity": 20.5}, base, {}) != []
    with pytest.raises(RunConfigError, match="'heldout/rougeL'.*not produce"):
        broken_guards([Guard("heldout/rougeL", 0.1)], {"boolq/acc": 0.6}, base, directions)
    with pytest.raises(RunConfigError, match="compare_base"):
        broken_guards([Guard("boolq/acc", 0.1)], {"boolq/acc": 0.6}, None, directions)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_dir(tmp_path_factory.mktemp("tiny"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, tok


CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
     {"role": "assistant", "content": "I am Vicuna, trained by LMSYS."}, {"role": "user", "content": "Bye"},
     {"role": "assistant", "content": "Goodbye!"}],
    [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4"}],
]


def test_heldout_items_are_assistant_turns_with_their_context(tiny):
    _, tok = tiny
    examples = [Example("", "", messages=m) for m in CONVERSATIONS] + [Example("Q: 3 plus 3?\nA:", "6")]
    items, skipped = build_items(examples, tok, HeldoutConfig(), max_length=256)
    assert skipped == 0 and [it.reference for it in items] == ["I am Vicuna, trained by LMSYS.", "Goodbye!", "4", "6"]
    assert [it.question for it in items] == ["Who are you?", "Bye", "What is 2 plus 2?", "Q: 3 plus 3?\nA:"]
    for it, conv in zip(items[:3], [CONVERSATIONS[0][:3], CONVERSATIONS[0], CONVERSATIONS[1]], strict=True):
        # the context is exactly what the template renders to ask for that turn
        assert it.context == tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
        trained = tok.decode([t for t in it.labels if t != -100])
        assert trained == conv[-1]["content"] + "<|im_end|>"  # only this turn's content and end token
        assert it.prompt_ids == tok(it.context, add_special_tokens=False)["input_ids"]
    assert tok.decode([t for t in items[3].labels if t != -100]) == "6" + tok.eos_token
    last, _ = build_items(examples[:2], tok, HeldoutConfig(turns="last"), max_length=256)
    assert [it.reference for it in last] == ["Goodbye!", "4"]
    few, _ = build_items(examples, tok, HeldoutConfig(limit=2), max_length=256)
    assert len(few) == 2
    short, skipped = build_items(examples[:1], tok, HeldoutConfig(), max_length=30)
    assert skipped >= 1 and all(len(it.input_ids) <= 30 for it in short)


def test_batched_item_losses_equal_one_item_at_a_time_by_hand(tiny):
    model, tok = tiny
    examples = [Example("", "", messages=m) for m in CONVERSATIONS] + [Example("Q: 3 plus 3?\nA:", "6")]
    items, _ = build_items(examples, tok, HeldoutConfig(), max_length=256)
    batched = item_losses(model, items, tok.pad_token_id, batch_size=3)  # padded batches
    for it, (loss, n) in zip(items, batched, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([it.input_ids])).logits[0].double(), -1)
        terms = [-logp[t, it.input_ids[t + 1]].item() for t in range(len(it.input_ids) - 1) if it.labels[t + 1] != -100]
        assert n == len(terms) and loss == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_batched_greedy_answers_equal_one_by_one(tiny):
    model, tok = tiny
    prompts = [tok(p)["input_ids"] for p in ("Hello", "The capital of France is a long way from", "1 2 3",
                                             "Once upon a time there was")]
    one_by_one = generate_answers(model, tok, prompts, max_new_tokens=8, batch_size=1)
    batched = generate_answers(model, tok, prompts, max_new_tokens=8, batch_size=4)
    assert batched == one_by_one and all(isinstance(a, str) for a in batched)


def test_score_cache_keys_follow_the_weights(tiny, tmp_path):
    model, _ = tiny
    fp = score_cache.model_fingerprint(model)
    assert score_cache.model_fingerprint(model) == fp
    with torch.no_grad():
        p = next(model.parameters())
        old = p[0, 0].item()
        p[0, 0] += 1e-3
        changed = score_cache.model_fingerprint(model)
        p[0, 0] = old
    assert changed != fp and score_cache.model_fingerprint(model) == fp
    key = score_cache.cache_key(fp, "suite-a", batch_size=8)
    assert key != score_cache.cache_key(fp, "suite-b", batch_size=8) != score_cache.cache_key(fp, "suite-a", batch_size=4)
    assert score_cache.load(str(tmp_path), key) is None
    score_cache.save(str(tmp_path), key, {"metrics": {"acc_avg": 0.5}})
    assert score_cache.load(str(tmp_path), key) == {"metrics": {"acc_avg": 0.5}}
    (tmp_path / f"{key}.json").write_text("{half")
    assert score_cache.load(str(tmp_path), key) is None  # a corrupt entry is a miss
    assert score_cache.cache_location("off", "") is None
    assert score_cache.cache_location("", "s3://b/p") == "s3://b/p/eval-cache"
    assert json.dumps(score_cache.cache_location("", ""))


def test_a_chat_jsonl_file_is_read_line_by_line(tmp_path):
    from pipelines.config.run_config import DataConfig
    from pipelines.data.sources import read_source

    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in CONVERSATIONS))
    examples, _ = read_source(DataConfig(source=str(path), format="chat"))
    assert [len(e.messages) for e in examples] == [5, 2]


def test_register_metric_not_produced_is_one_line_naming_what_was():
    from pipelines.config.run_config import RunConfig
    from pipelines.steps.register import challenger_of

    run = RunConfig.from_dict({"eval": {"tasks": ["my_tasks/quiz.yaml"]}, "register": {"metric": "quiz/f1"}})
    per_item = {"format": 2, "suite": "s", "tuned": {"metrics": {"my_quiz/acc": 0.5, "acc_avg": 0.5},
                                                     "items": {"my_quiz/acc": {"my_quiz": [1, 0]},
                                                               "acc_avg": {"my_quiz": [1, 0]}}}}
    with pytest.raises(RunConfigError) as err:
        challenger_of(run, {"tuned": {"metrics": {}}}, per_item, {"content_hash": "h"}, by="t")
    assert "'register.metric'" in str(err.value) and "produced: acc_avg, my_quiz/acc" in str(err.value)
