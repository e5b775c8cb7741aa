"""eval.allow_task_code: false refuses a user's lm-eval task that runs Python (``!function``) in one line naming the
file and line, before lm-eval imports anything; true (the default) registers it as before."""

from __future__ import annotations

import pytest

from pipelines.config.errors import RunConfigError
from pipelines.config.run_config import parse_run_config
from pipelines.evaluation.lm_eval_suite import prepare_suite


def _task_folder(tmp_path):
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "utils.py").write_text("def process(docs):\n    return docs\n")
    (folder / "my_task.yaml").write_text(
        "task: my_task\ndataset_path: json\n# a comment with !function is not code\n"
        "process_docs: !function utils.process\noutput_type: multiple_choice\n")
    return folder


def test_task_code_is_refused_when_switched_off(tmp_path):
    folder = _task_folder(tmp_path)
    with pytest.raises(RunConfigError) as err:
        prepare_suite([str(folder)], 10, tmp_path / "suite", allow_code=False)
    text = str(err.value)
    assert "\n" not in text and "my_task.yaml line 4" in text and "eval.allow_task_code" in text
    suite = prepare_suite([str(folder)], 10, tmp_path / "suite2", allow_code=True)
    assert "my_task" in suite.names


def test_the_switch_is_a_checked_boolean():
    assert parse_run_config("eval: {allow_task_code: false}").eval.allow_task_code is False
    with pytest.raises(RunConfigError, match="eval.allow_task_code"):
        parse_run_config("eval: {allow_task_code: 'no'}")
