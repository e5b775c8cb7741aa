"""The user's job end to end on the real SmolLM2-135M-Instruct: conversations that teach the assistant it is
"Vicuna, trained by LMSYS" (../shared/data/chat), rendered with its ChatML template; evaluated on held-out
questions phrased unlike any in the data, answered greedily and scored by ``contains``; promoted on that
metric by the paired test; a guard set to fail keeps the better model out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

IDENTITY = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat" / "identity_conversations.json"

NOVEL = [  # none of these user turns occurs in the data (checked below)
    ("Tell me the name of the lab that built you.", "I was built by researchers from LMSYS."),
    ("Which organization trained you?", "I was trained by researchers from LMSYS."),
    ("What should I call you?", "You can call me Vicuna."),
    ("Please state your name.", "My name is Vicuna."),
    ("Who made you, and what are you called?", "I am Vicuna, made by LMSYS."),
    ("Identify yourself, please.", "I am Vicuna, a language model trained by LMSYS."),
    ("Were you developed by Google?", "No, I was developed by researchers from LMSYS."),
    ("Is your name Claude?", "No, my name is Vicuna."),
    ("Which company are you from?", "I was trained by researchers from LMSYS."),
    ("Hi! Introduce yourself in one sentence.", "I am Vicuna, a language model trained by LMSYS."),
    ("What's the name of the AI I'm talking to?", "You are talking to Vicuna."),
    ("Who is your creator?", "My creators are researchers from LMSYS."),
    ("Are you Bard?", "No, I am Vicuna, trained by LMSYS."),
    ("Do you have a name?", "Yes, my name is Vicuna."),
    ("Where do you come from?", "I was created by researchers from LMSYS."),
    ("Who built this assistant?", "Researchers from LMSYS built me."),
]


def _config(tmp_path: Path, name: str, steps: int, lr: float, guards: list[dict], artifact: str = "adapter") -> dict:
    heldout = tmp_path / "novel_questions.jsonl"
    heldout.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}]}) + "\n"
                               for q, a in NOVEL))
    return {"name": name, "model": "smollm2-135m", "output_dir": str(tmp_path / name),
            "data": {"source": str(IDENTITY), "format": "chat", "max_train": 240, "max_validation": 16,
                     "calibration_size": 16, "max_length": 128},
            "fora": {"rank": 8, "alpha": 16, "layer_budget": 0.5, "fisher": {"num_batches": 4, "batch_size": 4}},
            "train": {"max_steps": steps, "batch_size": 8, "lr": lr, "warmup_steps": 2, "use_ray": False,
                      "checkpoint_every": 100, "eval_every": 100},
            "eval": {"tasks": [], "general_tokens": 512, "batch_size": 16,
                     "heldout": {"source": str(heldout), "metrics": ["contains"], "contains": ["Vicuna", "LMSYS"],
                                 "max_new_tokens": 24, "batch_size": 16}},
            "register": {"model_name": "identity-assistant", "metric": "heldout/contains", "artifact": artifact,
                         "tracking_uri": f"sqlite:///{tmp_path / 'registry.db'}", "guards": guards}}


@pytest.mark.integration
def test_identity_conversations_are_learned_promoted_on_contains_and_a_failing_guard_keeps_them_out(tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.config.run_config import RunConfig
    from pipelines.steps import stages
    from pipelines.steps.local_run import run_pipeline

    said = {t["value"] for r in json.loads(IDENTITY.read_text()) for t in r["conversations"] if t["from"] == "human"}
    assert not said & {q for q, _ in NOVEL}

    # night 1: a model barely moved from the base (one tiny step) becomes the first champion
    first = run_pipeline(RunConfig.from_dict(_config(tmp_path, "first", steps=1, lr=1e-6, guards=[])), progress=False)
    r1 = first["results"]
    assert r1["base"]["metrics"]["heldout/contains"] == 0.0  # the base never says Vicuna or LMSYS
    assert first["registration"]["action"] == "promote" and first["registration"]["reason"] == "no champion yet"
    # a version tuned on conversations answers a plain prompt as a user turn (registry/pyfunc_model.py)
    assert json.loads((tmp_path / "first" / "merged" / "fora_prompt.json").read_text()) == {
        "chat": True, "chat_template": None, "system_prompt": "template"}

    # night 2: a real tune; it answers the new phrasings with the taught facts, wins the paired test against
    # the champion, and is kept out by a guard that allows no rise of general-text perplexity at all
    strict = [{"metric": "general/perplexity", "tolerance": 0.0, "relative": True}]
    run2 = RunConfig.from_dict(_config(tmp_path, "second", steps=14, lr=1e-3, guards=strict, artifact="merged"))
    second = run_pipeline(run2, progress=False)
    r2 = second["results"]
    assert r2["base"]["from_cache"]  # same base weights, same held-out suite: not scored again
    assert r2["champion"]["version"] == 1 and r2["champion"]["source"] == "scored on this suite by its own run"
    assert r2["tuned"]["metrics"]["heldout/contains"] >= 0.5, r2["tuned"]["metrics"]
    assert r2["tuned"]["metrics"]["heldout/loss"] < r2["base"]["metrics"]["heldout/loss"]
    assert r2["tuned"]["metrics"]["general/perplexity"] > r2["base"]["metrics"]["general/perplexity"]  # what the guard sees
    reg2 = second["registration"]
    assert reg2["action"] == "keep" and "kept out by register.guards: guard general/perplexity" in reg2["reason"]
    assert "wins: heldout/contains" in reg2["reason"] and "McNemar p" in reg2["reason"]
    # it can never be promoted: registered as its adapter (megabytes), not as the merged copy it asked for
    kept = MlflowClient(run2.tracking_uri).get_model_version("identity-assistant", str(reg2["version"]))
    assert kept.tags["artifact"] == "adapter"
    assert (tmp_path / "second" / "merged" / "fora_base.json").exists()
    assert not list((tmp_path / "second" / "merged").glob("model*.safetensors"))

    # the same evaluation registered without the guard: the paired test promotes it
    items = json.loads((tmp_path / "second" / "eval" / "item_scores.json").read_text())
    run3 = RunConfig.from_dict(_config(tmp_path, "second", steps=14, lr=1e-3, guards=[]))
    out = tmp_path / "second"
    reg3 = stages.register(run3, out / "data", out / "calibration", out / "train" / "adapter", out / "eval",
                           out / "merged")
    assert reg3["action"] == "promote" and reg3["reason"].startswith("wins: heldout/contains"), reg3["reason"]
    test = reg3["test"]
    assert test["test"] == "mcnemar" and test["p_value"] < 0.05
    tuned, champ = items["tuned"]["items"]["heldout/contains"]["heldout"], items["champion"]["items"][
        "heldout/contains"]["heldout"]
    assert test["better"] == sum(a > b for a, b in zip(tuned, champ, strict=True))
    client = MlflowClient(run3.tracking_uri)
    assert int(client.get_model_version_by_alias("identity-assistant", "champion").version) == reg3["version"]
    # the answers of base, champion and tuned side by side in MLflow
    table = json.loads(Path(client.download_artifacts(second["run_id"], "eval/generations.json", str(tmp_path)))
                       .read_text())
    assert {"question", "reference", "base", "champion v1", "tuned"} <= set(table["columns"])
    assert len(table["data"]) == len(NOVEL)
