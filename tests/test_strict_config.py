"""One strict schema, fed the way a careless user types: YAML 1.1 booleans, comma strings, infinities, a value
where a section belongs, duplicate keys, bad addresses in the config or the environment, Kubernetes fields
the API server would reject. Each is one line naming the field (exit 2), or a config that round-trips.

The property test feeds every field of the schema type-confused and out-of-range values through
``fora validate --schema-only --set field=value`` and asserts exactly that, never a traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import cli
from pipelines.config.errors import RunConfigError
from pipelines.config.resources import StepResources
from pipelines.config.run_config import RunConfig, parse_run_config

SMOKE = "configs/smoke.yaml"


def validate(*sets: str, env: dict | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """``fora validate SMOKE --schema-only --set ...`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["validate", SMOKE, "--schema-only"] + [a for s in sets for a in ("--set", s)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fora: error: "), err
    return lines[0]


# -- the worst cases of the issue, each failing before the fix ---------------------------------------------
@pytest.mark.parametrize("setting, expect", [
    ("train.lr=.inf", "invalid value for 'train.lr': .inf (allowed: a finite number)"),
    ("fora.lora_plus.ratio=.inf", "invalid value for 'fora.lora_plus.ratio': .inf"),
    ("train.lr=.nan", "invalid value for 'train.lr': .nan"),
    ("train.use_ray='no'", "invalid value for 'train.use_ray': 'no' (allowed: true, false"),
    ("train.use_ray=no", "invalid value for 'train.use_ray': 'no'"),  # YAML 1.1 would read false
    ("fora.fisher=8", "invalid value for 'fora.fisher': 8 (allowed: a mapping ('fisher' is a section)"),
    ("train=3", "invalid value for 'train': 3 (allowed: a mapping ('train' is a section)"),
    ("eval.tasks=boolq,piqa", "write the list as [boolq, piqa]"),
    ("fora.target_modules=q,v", "write [q, v]"),
    ("train.max_steps=1e3", "invalid value for 'train.max_steps': 1000.0 (allowed: an integer)"),
    ("ray.address=head:8265", "port 8265 is Ray's Jobs API, which speaks HTTP: write http://head:8265"),
    ("ray.address=http://", "invalid value for 'ray.address'"),
    ("register.tracking_uri=htp://x", "invalid value for 'register.tracking_uri': 'htp://x'"),
    ("resources.train.tolerations=[{key: a, operator: Exists, effect: NoExecute, toleration_seconds: soon}]",
     "'resources.train.tolerations[0].toleration_seconds': 'soon'"),
    ("resources.train.tolerations=[{key: a, operator: Exists, value: b}]",
     "'resources.train.tolerations[0].value': 'b' (allowed: nothing: with operator Exists"),
    ("resources.train.tolerations=[{key: a, toleration_seconds: 30}]", "only with effect: NoExecute"),
    ("resources.train.gpus=true", "invalid value for 'resources.train.gpus': true (allowed: an integer)"),
])
def test_careless_values_are_one_line_naming_the_field(setting, expect):
    code, _, err = validate(setting)
    assert code == 2
    assert expect in one_line(err), err


def test_yaml_1_2_booleans_keep_on_and_off_as_the_user_meant():
    assert parse_run_config("train: {bf16: on}").train.bf16 == "on"  # YAML 1.1 read True, then refused it
    assert parse_run_config("train: {bf16: off}").train.bf16 == "off"
    assert parse_run_config("train: {bf16: true}").train.bf16 == "on"
    assert parse_run_config("train: {use_ray: false}").train.use_ray is False


def test_a_duplicate_key_names_both_lines():
    text = "name: a\ntrain:\n  lr: 1.0e-4\n  max_steps: 5\n  lr: 1.0e-3\n"
    with pytest.raises(RunConfigError, match=r"line 5, column 3: duplicate key 'lr' \(first at line 3\)"):
        parse_run_config(text, where="c.yaml")
    merged = "base: &b {lr: 1.0e-4}\n"  # '<<' merges may be overridden beside them: not a duplicate
    with pytest.raises(RunConfigError, match="unknown field 'base'"):
        parse_run_config(merged + "train: {<<: *b, lr: 1.0e-3}\n")


@pytest.mark.parametrize("var, value, expect", [
    ("RAY_ADDRESS", "head:8265", "invalid value for 'RAY_ADDRESS (environment)': 'head:8265'"),
    ("RAY_ADDRESS", "ray://head:10001", "invalid value for 'RAY_ADDRESS (environment)'"),
    ("MLFLOW_TRACKING_URI", "htp://x", "invalid value for 'MLFLOW_TRACKING_URI (environment)': 'htp://x'"),
    ("AWS_ENDPOINT_URL", "localhost:8333", "invalid value for 'AWS_ENDPOINT_URL (environment)'"),
])
def test_the_environment_gets_the_same_checks_as_the_config(monkeypatch, var, value, expect):
    import pipelines.config.run_config as rc

    monkeypatch.setenv(var, value)
    if var == "MLFLOW_TRACKING_URI":  # read as the process started (mlflow rewrites the variable later)
        monkeypatch.setattr(rc, "LAUNCH_TRACKING_URI", value)
    code, _, err = validate()
    assert code == 2 and expect in one_line(err)


def test_a_config_value_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "head:8265")  # not in force: ray.address is set
    assert validate("ray.address=local")[0] == 0


def test_compile_refuses_bad_values_and_never_overwrites_the_checked_in_yaml(tmp_path):
    from pipelines.kubeflow.fora_pipeline import PIPELINE_YAML

    before = PIPELINE_YAML.stat().st_mtime_ns
    for argv, expect in ((["compile", "--train-gpus", "-1", "--output-dir", str(tmp_path)],
                          "invalid value for 'resources.train.gpus': -1"),
                         (["compile", "--output-dir", ""], "--output-dir '': give a folder"),
                         (["compile", "--set", "resources.train.tolerations=[{key: a, operator: Exists, value: b}]",
                           "--output-dir", str(tmp_path)], "with operator Exists")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(argv) == 2, argv
        assert expect in one_line(err.getvalue())
    assert PIPELINE_YAML.stat().st_mtime_ns == before
    assert not list(tmp_path.iterdir())


# -- the property: every field, type-confused and out of range --------------------------------------------
def _leaves(cls, prefix: str = "") -> list[tuple[str, object]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        path, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.append((path, hint))
            out += _leaves(hint, path + ".")
        elif prefix == "resources.":
            out.append((path, dict))
            out += _leaves(StepResources, path + ".")
        else:
            out.append((path, hint))
    return out


FIELDS = sorted({path for path, _ in _leaves(RunConfig)})
CONFUSING = st.one_of(
    st.none(), st.booleans(), st.integers(-(10 ** 12), 10 ** 12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["on", "off", "yes", "no", "1e-3", "a,b", "", "http://", "head:8265",
                                           "s3://", "0", "-1", "[]", "{}", "~", "Champion"]),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4), st.floats(allow_nan=True)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2))


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=CONFUSING)
def test_every_field_confused_is_one_line_or_a_config_that_round_trips(field, value):
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    code, out, err = validate(f"{field}={text}")
    assert code in (0, 2), (code, err)
    if code == 2:
        line = one_line(err)
        named = [p for p in FIELDS if f"'{p}" in line or f" {p}" in line]
        assert named or "duplicate key" in line, line  # the field, or the other field of a cross-field rule
        return
    resolved = json.loads(out)
    again = RunConfig.from_dict(resolved).to_dict()
    assert again == resolved
    node = resolved
    for part in field.split("."):
        node = node[part]
    assert _typed(KINDS[field], node), (field, value, node)


KINDS = dict(_leaves(RunConfig))


def _typed(hint, value) -> bool:
    """What an accepted value must be, by the field's annotation (checked here independently of the schema's
    own checker): a YAML boolean, an integer, a finite number, a string, a list, a mapping."""
    import math

    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float or hint == (int | float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is list or typing.get_origin(hint) is list:
        return isinstance(value, list)
    if hint is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return True


def test_the_property_sees_every_section_and_leaf():
    assert {"train.lr", "fora.fisher", "fora.fisher.num_batches", "resources.train.tolerations",
            "eval.heldout.metrics", "register.guards", "sweep.lr", "ablation.seeds"} <= set(FIELDS)


def test_output_dir_is_not_created_by_validate(tmp_path):
    target = tmp_path / "never"
    assert validate(f"output_dir={target}")[0] == 0
    assert not target.exists()


assert Path(SMOKE).exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("sets, env, expect", [
    (["ray.address=127.0.0.1:{port}"], {}, "cannot reach the Ray cluster at 127.0.0.1:{port}"),
    (["ray.address=http://127.0.0.1:{port}"], {}, "cannot reach the Ray cluster's Jobs API at http://127.0.0.1:{port}"),
    (["storage.uri=s3://fora-bucket/x"], {"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k",
                                          "AWS_SECRET_ACCESS_KEY": "s"}, "cannot reach the S3 endpoint"),
    (["register.tracking_uri=http://127.0.0.1:{port}"], {}, "cannot reach the MLflow server at http://127.0.0.1:{port}"),
    (["train.use_gpu=true"], {}, "invalid value for 'train.use_gpu': true, but this machine has no GPU"),
    (["resources.calibrate.gpus=1"], {}, "invalid value for 'resources.calibrate.gpus': 1, but this machine has no"),
])
def test_a_service_that_is_down_is_one_line_before_any_folder_or_mlflow_run(tmp_path, monkeypatch, sets, env, expect):
    import time

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the GPU case, on any machine
    port = _closed_port()
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(port=port))
    out = tmp_path / "out"
    argv = ["run", SMOKE, "--quiet", "--set", f"output_dir={out}"] + [
        a for s in sets for a in ("--set", s.format(port=port))]
    err = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    assert code == 2
    assert expect.format(port=port) in err.getvalue().strip().splitlines()[-1], err.getvalue()[-1500:]
    assert time.monotonic() - t0 < 90  # short timeouts, no retries for minutes
    assert not out.exists()  # no folder, so no MLflow database and no run
