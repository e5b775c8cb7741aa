"""Sequence packing: every example whole in exactly one sequence, best-fit close to the optimum, and the
packed loss equal, example by example, to each example's loss alone (no attention across examples)."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_config

from pipelines.data.packing import collate_packed, pack_rows


def _rows(lengths: list[int], seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate(lengths):
        ids = torch.randint(1, 128, (n,), generator=gen).tolist()
        prompt = min(n - 2, 1 + i % 3)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def _optimal_bins(lengths: list[int], cap: int) -> int:
    """Brute force: the fewest bins of size ``cap`` (every assignment of items to bins)."""
    for k in range(1, len(lengths) + 1):
        for assign in itertools.product(range(k), repeat=len(lengths)):
            loads = [0] * k
            for n, b in zip(lengths, assign, strict=True):
                loads[b] += n
            if max(loads) <= cap:
                return k
    raise AssertionError


@pytest.mark.parametrize("seed", range(6))
def test_every_row_is_packed_whole_once_within_the_length_and_near_the_fewest_sequences(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(2, 16) for _ in range(7)]
    rows = _rows(lengths, seed)
    packed = pack_rows(rows, 16)
    assert all(len(p["input_ids"]) <= 16 for p in packed)
    docs = []
    for p in packed:
        start = 0
        for n in p["doc_lengths"]:
            docs.append(tuple(p["input_ids"][start:start + n]))
            assert p["position_ids"][start:start + n] == list(range(n))
            start += n
        assert start == len(p["input_ids"])
    assert sorted(docs) == sorted(tuple(r["input_ids"]) for r in rows)
    # best-fit decreasing uses at most 11/9 OPT + 6/9 bins (Dosa 2007); on 7 items: OPT or OPT + 1
    assert len(packed) <= _optimal_bins(lengths, 16) + 1


def test_a_row_longer_than_the_packed_length_is_refused():
    with pytest.raises(ValueError, match="row 0 has 9 tokens, more than the packed length 8"):
        pack_rows(_rows([9]), 8)


def _per_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_packed_loss_equals_each_example_alone(family, attn):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(family)
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config).eval()
    rows = _rows([7, 12, 5, 9, 11, 4, 8], seed=3)
    packed = pack_rows(rows, 24)
    assert any(len(p["doc_lengths"]) > 1 for p in packed)
    batch = collate_packed(packed, pad_id=0)
    with torch.no_grad():
        # use_cache=False: with a cache (the config's default, even in train mode) transformers does not look for
        # packed sequences in position_ids and every example would attend to the ones before it
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        by_doc = {}
        for b, p in enumerate(packed):
            start = 0
            for n in p["doc_lengths"]:
                doc = p["input_ids"][start:start + n]
                by_doc[tuple(doc)] = _per_token_losses(logits[b, start:start + n], batch["labels"][b, start:start + n])
                # an example's first token is never a target (the token before it is another example's)
                assert batch["labels"][b, start] == -100
                start += n
        for r in rows:
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            want = _per_token_losses(alone, torch.tensor(r["labels"]))
            got = by_doc[tuple(r["input_ids"])]
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # the whole batch's mean loss with num_items_in_batch equals the mean over the examples' tokens
        n = sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows)
        loss = model(**batch, num_items_in_batch=torch.tensor(n), use_cache=False).loss
        total = sum(float(_per_token_losses(model(input_ids=torch.tensor([r["input_ids"]])).logits[0],
                                            torch.tensor(r["labels"])).sum()) for r in rows)
        assert abs(float(loss) - total / n) < 1e-4


def test_packing_trains_with_fewer_padded_tokens(tmp_path):
    """A short packed run in-process: it trains, and its sequences carry more real tokens than the padded rows."""
    from pipeline_fixtures import tiny_model_dir, write_records

    from fora_core import ModelSource
    from pipelines.config.run_config import RunConfig
    from pipelines.data.jsonl import read_jsonl
    from pipelines.steps.data_prep import prepare_data
    from pipelines.steps.train import run_training

    model_dir = tiny_model_dir(tmp_path)
    records = write_records(tmp_path / "records.json", 40)
    cfg = {"name": "packed", "model": str(model_dir), "output_dir": str(tmp_path / "out"),
           "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8,
                    "max_length": 256, "packing": True},
           "fora": {"rank": 4, "alpha": 8, "fisher": {"num_batches": 4, "batch_size": 2}},
           "train": {"max_steps": 3, "batch_size": 2, "use_ray": False, "eval_every": 3}}
    run = RunConfig.from_dict(cfg)
    _, tok = ModelSource(run.model).load()
    prepare_data(run.data, tok, tmp_path / "data")
    rows = read_jsonl(tmp_path / "data" / "train.jsonl")
    packed = pack_rows(rows, 256)
    assert len(packed) <= len(rows) / 4  # about five 48-token rows per 256-token sequence
    out = run_training(run, tmp_path / "data", [1, 3], tmp_path / "train")
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3] and all(h["loss"] == h["loss"] for h in history)
    assert out["metrics"]["val_loss"] > 0
