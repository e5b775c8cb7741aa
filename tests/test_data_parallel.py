"""Data-parallel FoRA is the same training as one worker: disjoint shards that cover the epoch, a gradient
equal to the global batch's token mean, bit-identical replicas, and two Ray Train workers (gloo, CPU) that
end where one worker ends at the same global batch, with one copy of each checkpoint, resumable on another
worker count. The two-node version of the Ray test is in tests/cluster/test_cluster.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pipeline_fixtures import prepared_data_dir, tiny_model_dir, write_records
from safetensors.torch import load_file
from tiny_models import tiny_model

from fora_core import ForaConfig, apply_fora
from pipelines.config.run_config import RunConfig
from pipelines.steps.train import run_training
from pipelines.training.batches import batch_indices, make_batch, target_tokens, worker_share
from pipelines.training.faults import FailAt

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
LAYERS = [1, 3]
STEPS = 6
# the sums of a split batch are added in another order (per worker, then all-reduced): float32 rounding
LOSS_TOL = 1e-5
ADAPTER_TOL = 2e-5


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_worker_shards_are_disjoint_and_cover_every_epoch(world):
    n_rows, per_worker, accum = 72, 2, 3
    global_batch = per_worker * accum * world
    steps = 4 * n_rows // global_batch  # four epochs (72 is a multiple of every global batch here)
    seen: dict[int, list[int]] = {}
    for step in range(steps):
        idx = batch_indices(step, global_batch, n_rows, seed=7)
        shares = [worker_share(idx, r, world) for r in range(world)]
        assert sorted(i for s in shares for i in s) == sorted(idx)  # the workers' rows are the global batch
        assert all(len(s) == per_worker * accum for s in shares)
        epoch = step * global_batch // n_rows
        for s in shares:
            seen.setdefault(epoch, []).extend(s)
    for epoch, rows in seen.items():
        assert sorted(rows) == list(range(n_rows)), epoch  # each row exactly once per epoch


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Rows of different lengths with a masked prompt, as data prep writes them."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 5 + (i * 3) % 9
        ids = torch.randint(0, 128, (length,), generator=gen).tolist()
        prompt = 1 + i % 3
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(("world", "accum"), [(2, 1), (2, 2), (4, 1)])
def test_the_split_gradient_is_the_global_batch_token_mean(world, accum):
    """Summing every worker's micro-batch gradients of (sum of token losses / N) x W, then dividing by W (DDP's
    mean), gives the gradient of the global batch's token-mean loss, computed here row by row with
    F.cross_entropy (a second route: no padding, no batching, no num_items_in_batch)."""
    model = apply_fora(tiny_model("llama"), None, ForaConfig(method="lora", rank=4, dropout=0.0))
    for p in model.parameters():  # B = 0 at the start: give the adapters a non-trivial point
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    rows = _rows(2 * 2 * 4)
    idx = list(range(len(rows)))
    per_worker = len(rows) // (world * accum)
    n = torch.tensor(sum(target_tokens(r) for r in rows))

    model.zero_grad()
    for rank in range(world):
        mine = worker_share(idx, rank, world)
        for m in range(accum):
            batch = make_batch([rows[i] for i in mine[m * per_worker:(m + 1) * per_worker]], 0)
            (model(**batch, num_items_in_batch=n).loss * world).backward()
    split = [g / world for g in _grads(model)]

    model.zero_grad()
    total = torch.zeros(())
    for r in rows:
        logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1]
        total = total + F.cross_entropy(logits, torch.tensor(r["labels"][1:]), ignore_index=-100, reduction="sum")
    (total / int(n)).backward()
    for a, b in zip(split, _grads(model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def config(root: Path, model_dir: Path, **train) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    records = write_records(root / "records.json", 40)
    return {"name": "ddp", "model": str(model_dir), "output_dir": str(root / "out"),
            "data": {"source": str(records), "max_train": 32, "max_validation": 4, "calibration_size": 8},
            "fora": {"method": "fora", "rank": 4, "alpha": 8, "dropout": 0.0,
                     "fisher": {"num_batches": 4, "batch_size": 2}},
            "train": {"max_steps": STEPS, "checkpoint_every": 2, "eval_every": 1, "max_failures": 0,
                      "warmup_steps": 1, "lr": 5e-3, **train}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("data")
    return prepared_data_dir(root, config(root, model_dir))


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, model_dir, data_dir):
    """The reference: one worker, in-process, global batch 4."""
    root = tmp_path_factory.mktemp("one")
    run = RunConfig.from_dict(config(root, model_dir, batch_size=4, use_ray=False))
    out = run_training(run, data_dir, LAYERS, root / "train")
    return out, json.loads((root / "train" / "history.json").read_text())


def _adapter(path: str) -> dict:
    return load_file(str(Path(path) / "adapter_model.safetensors"))


def assert_same_training(history, ref_history, adapter, ref_adapter):
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    for h, r in zip(history, ref_history, strict=True):
        assert abs(h["loss"] - r["loss"]) <= LOSS_TOL * max(1.0, abs(r["loss"])), (h["step"], h["loss"], r["loss"])
    assert adapter.keys() == ref_adapter.keys()
    moved = 0.0
    for k in adapter:
        torch.testing.assert_close(adapter[k], ref_adapter[k], rtol=0, atol=ADAPTER_TOL, msg=k)
        moved = max(moved, float(adapter[k].abs().max()))
    assert moved > 0.01  # the adapters trained (A starts at 0)


def test_two_ray_workers_equal_one_worker_at_the_same_global_batch(tmp_path, model_dir, data_dir, one_worker):
    run = RunConfig.from_dict(config(tmp_path, model_dir, batch_size=2, num_workers=2, cpus_per_worker=0.5))
    out = run_training(run, data_dir, LAYERS, tmp_path / "train")
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    # every worker held bit-identical B and A after every step (all-reduce MAX - MIN of the parameters)
    assert [h["replica_spread"] for h in history] == [0.0] * STEPS
    ref_out, ref_history = one_worker
    assert_same_training(history, ref_history, _adapter(out["adapter_dir"]), _adapter(ref_out["adapter_dir"]))
    assert all(h["orthogonality_error"] < 1e-4 for h in history)  # B stayed on the Stiefel manifold
    # checkpoints are written once, by rank 0: one adapter per checkpoint, at steps 2, 4, 6
    metas = sorted(json.loads(p.read_text())["step"] for p in Path(run.checkpoint_dir).rglob("fora_checkpoint.json"))
    assert metas[-2:] == [4, 6] and set(metas) <= {2, 4, 6}  # Ray keeps the newest two
    for ckpt in {p.parent for p in Path(run.checkpoint_dir).rglob("fora_checkpoint.json")}:
        assert len(list(ckpt.rglob("adapter_model.safetensors"))) == 1, ckpt


def test_a_two_worker_run_resumes_on_one_worker(tmp_path, model_dir, data_dir, one_worker):
    """Two workers stop after the step-2 checkpoint; the re-run on one worker at the same global batch (2 x 2 =
    4 x 1: the same checkpoint namespace) continues from step 3 and ends where one worker does."""
    two = RunConfig.from_dict(config(tmp_path, model_dir, batch_size=2, num_workers=2, cpus_per_worker=0.5))
    with pytest.raises(Exception, match="injected failure at step 3"):
        run_training(two, data_dir, LAYERS, tmp_path / "train", hooks=[FailAt(3)])
    one = RunConfig.from_dict(config(tmp_path, model_dir, batch_size=4, use_ray=False))
    got = run_training(one, data_dir, LAYERS, tmp_path / "train")
    assert got["resumed_from_step"] == 2
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    ref_out, ref_history = one_worker
    assert_same_training(history, ref_history, _adapter(got["adapter_dir"]), _adapter(ref_out["adapter_dir"]))
