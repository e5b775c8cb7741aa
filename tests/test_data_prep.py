"""Data prep on real files from ../shared/data and on malformed ones."""

import json
from pathlib import Path

import pytest
from pipeline_fixtures import tiny_model_dir
from transformers import AutoTokenizer

from pipelines.config.errors import DataError
from pipelines.config.run_config import DataConfig
from pipelines.data.jsonl import read_jsonl
from pipelines.steps.data_prep import prepare_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "commonsense"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(tiny_model_dir(tmp_path_factory.mktemp("m")))


def test_llm_adapters_file_masks_the_prompt(tokenizer, tmp_path):
    src = SHARED / "ARC-Easy" / "train.json"
    card = prepare_data(DataConfig(source=str(src), max_train=30, max_validation=5, calibration_size=4),
                        tokenizer, tmp_path)
    assert card["counts"]["train"] == 30 and card["counts"]["validation"] == 5
    assert card["counts"]["calibration"] == 4
    records = json.loads(src.read_text())
    outputs = {r["output"] for r in records}
    for row in read_jsonl(tmp_path / "train.jsonl")[:10]:
        response = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
        assert response[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(response[:-1]) in outputs
        assert row["labels"][0] == -100
    assert card["content_hash"].startswith("sha256:")
    again = prepare_data(DataConfig(source=str(src), max_train=30, max_validation=5, calibration_size=4),
                         tokenizer, tmp_path / "again")
    assert again["content_hash"] == card["content_hash"]


def test_alpaca_with_input_and_jsonl_prompt_response(tokenizer, tmp_path):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Add", "input": f"{i} and {i}", "output": str(2 * i)}
                                  for i in range(12)]))
    card = prepare_data(DataConfig(source=str(alpaca), max_validation=2), tokenizer, tmp_path / "a")
    assert card["counts"]["train"] == 11  # fewer rows than asked for: a tenth (here 1) is held out
    row = read_jsonl(tmp_path / "a" / "train.jsonl")[0]
    assert "### Input:" in tokenizer.decode(row["input_ids"])
    jl = tmp_path / "b.jsonl"
    jl.write_text("\n".join(json.dumps({"prompt": f"Q{i}", "response": f" A{i}"}) for i in range(6)))
    assert prepare_data(DataConfig(source=str(jl), max_validation=1), tokenizer, tmp_path / "b")["counts"]["train"] == 5


def test_dropped_rows_are_counted_not_silent(tokenizer, tmp_path):
    src = tmp_path / "d.json"
    rows = [{"instruction": "short", "output": "fine answer"}] * 3
    rows += [{"instruction": "long " * 400, "output": "x y z"}]
    rows += [{"instruction": f"q{i}", "output": f"answer {i}"} for i in range(6)]
    src.write_text(json.dumps(rows))
    card = prepare_data(DataConfig(source=str(src), max_length=64, max_validation=1), tokenizer, tmp_path / "o")
    assert card["dropped"]["duplicate"] == 2
    assert sum(v for k, v in card["dropped"].items() if "max_length" in k) == 1
    assert card["counts"]["train"] + card["counts"]["validation"] == 7


@pytest.mark.parametrize(
    "content, name, match",
    [
        ('[{"instruction": "a", "output": "b"}, {"instruction": "c"}]', "m.json", r"m.json row 2: field 'output' is missing"),
        ('[{"instruction": "a", "output": 3}]', "n.json", r"n.json row 1: field 'output' is not a string"),
        ('{"prompt": "a", "response": "b"}\n{oops\n', "j.jsonl", r"j.jsonl row 2: not valid JSON"),
        ("", "e.json", "e.json: the file is empty"),
        ("[]", "z.json", "z.json: no records"),
        ('{"a": 1}', "o.json", "expected a JSON list"),
    ],
)
def test_malformed_files_name_file_row_and_field(tokenizer, tmp_path, content, name, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        prepare_data(DataConfig(source=str(path)), tokenizer, tmp_path / "out")


def test_unknown_source_is_a_clear_error(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="could not load the HF dataset 'no/such-dataset'"):
        prepare_data(DataConfig(source="no/such-dataset"), tokenizer, tmp_path / "out")


def test_a_missing_data_file_is_a_missing_file_not_a_dataset(tokenizer, tmp_path):
    for source in (str(tmp_path / "train.json"), "data/not-here.jsonl", "./not-here"):
        with pytest.raises(DataError, match="data file not found"):
            prepare_data(DataConfig(source=source), tokenizer, tmp_path / "out")


def test_a_non_utf8_data_file(tokenizer, tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"instruction": "caf\xe9", "output": "ok"}]')  # Latin-1, not UTF-8
    with pytest.raises(DataError, match="latin1.json: not UTF-8 text"):
        prepare_data(DataConfig(source=str(path)), tokenizer, tmp_path / "out")


def _records(tmp_path, name, records, jsonl=False):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records))
    return path


def test_data_format_is_honoured(tokenizer, tmp_path):
    pr = [{"prompt": f"q{i}?", "response": f" a{i}"} for i in range(8)]
    # jsonl: one record per line whatever the suffix (auto would read a .txt line file as one JSON document)
    lines = _records(tmp_path, "records.txt", pr, jsonl=True)
    card = prepare_data(DataConfig(source=str(lines), format="jsonl", max_validation=2), tokenizer, tmp_path / "a")
    assert card["counts"]["read"] == 8
    with pytest.raises(DataError, match="records.txt: not valid JSON"):
        prepare_data(DataConfig(source=str(lines)), tokenizer, tmp_path / "b")
    # alpaca / llm-adapters: every record must have their fields (auto would take prompt/response)
    as_json = _records(tmp_path, "pr.json", pr)
    with pytest.raises(DataError, match="pr.json row 1: field 'instruction' is missing"):
        prepare_data(DataConfig(source=str(as_json), format="alpaca"), tokenizer, tmp_path / "c")
    alpaca = _records(tmp_path, "alpaca.json", [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(8)])
    assert prepare_data(DataConfig(source=str(alpaca), format="alpaca", max_validation=2), tokenizer,
                        tmp_path / "d")["counts"]["read"] == 8
    with pytest.raises(DataError, match="alpaca.json row 1: field 'answer' is missing"):
        prepare_data(DataConfig(source=str(alpaca), format="llm-adapters"), tokenizer, tmp_path / "e")
    # a format that cannot apply to the source names both fields, before reading anything
    for cfg, match in ((DataConfig(source=str(alpaca), format="builtin"), "data.format 'builtin' reads builtin"),
                       (DataConfig(source=str(alpaca), format="hf"), "data.format 'hf' needs an HF dataset id"),
                       (DataConfig(source=str(tmp_path), format="jsonl"), "is a folder; data.format 'jsonl'"),
                       (DataConfig(source="builtin:commonsense", format="alpaca"), "does not apply to data.source"),
                       (DataConfig(source="org/dataset", format="jsonl"), "data file not found: org/dataset")):
        with pytest.raises(DataError, match=match):
            prepare_data(cfg, tokenizer, tmp_path / "f")


def test_builtin_commonsense_mix(tokenizer, tmp_path):
    card = prepare_data(DataConfig(per_task_limit=5, max_train=20, max_validation=3), tokenizer, tmp_path)
    assert set(card["tasks"]) == {"boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                  "openbookqa"}
    assert card["counts"]["read"] == 35
