"""Serving a registered version: the InferenceService of each form validates against KServe's own CRD schema
(v0.20.0, tests/fixtures/kserve), the adapter is one vLLM's LoRA loader reads (and, read the way vLLM reads it,
reproduces the merged weights we serve), ``mlflow models serve`` answers over HTTP with the pipeline's greedy
output for a merged and an adapter-only version, and the deploy step applies only a champion."""

import json
import os
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from k8s_render import defaulted, free_port, strict_schema
from mlflow.tracking import MlflowClient
from pipeline_fixtures import tiny_model_dir, write_records
from safetensors.torch import load_file, save_file
from serving_fixtures import ask_server, serve_model

from pipelines import cli
from pipelines.config.run_config import load_run_config
from pipelines.serving.deploy import DeployError, apply_inference_service, deploy
from pipelines.serving.handoff import manifest_for
from pipelines.serving.locate import locate, storage_uri
from pipelines.serving.vllm_lora import NotServableByVllm, check_vllm_adapter

FIXTURE = Path(__file__).parent / "fixtures" / "kserve" / "inferenceservices-v0.20.0.json"
PROMPT = "Question: Which is heavier, a stone or a leaf?\nAnswer:"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny model trained for two steps and registered twice: version 1 merged, version 2 adapter-only."""
    root = tmp_path_factory.mktemp("serve")
    model_dir = tiny_model_dir(root)
    cfg = {"name": "serve", "model": str(model_dir), "output_dir": str(root / "out"),
           "data": {"source": str(write_records(root / "records.json", 30)), "max_train": 16, "max_validation": 4,
                    "calibration_size": 4},
           "fora": {"rank": 4, "alpha": 8, "dropout": 0.0, "fisher": {"num_batches": 2, "batch_size": 2}},
           "train": {"max_steps": 2, "batch_size": 4, "lr": 5e-2, "checkpoint_every": 2, "eval_every": 2,
                     "use_ray": False},
           "eval": {"tasks": [], "batch_size": 4},
           "register": {"model_name": "tiny-serve", "metric": "heldout/loss"},
           "serve": {"base_uri": "s3://models/tiny-base", "gpus": 1}}
    config = root / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    for step in ("data-prep", "calibrate", "train", "evaluate", "register"):
        assert cli.main([step, str(config), "--quiet"]) == 0, step
    assert cli.main(["register", str(config), "--quiet", "--set", "register.artifact=adapter",
                     "--out", str(root / "adapter-form")]) == 0
    return config, load_run_config(config), model_dir


def _validate(manifest: dict) -> None:
    crd = json.loads(FIXTURE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == (f"{crd['group']}/{crd['version']}", crd["kind"])
    jsonschema.validate(defaulted(manifest, crd["schema"]), strict_schema(crd["schema"]))
    predictor = manifest["spec"]["predictor"]
    # KServe's webhook (inference_service_validation.go): storageUri and storageUris never both; mount paths
    # absolute, without '..', under one common parent other than /
    assert not ("storageUri" in predictor["model"] and "storageUris" in predictor)
    mounts = [s["mountPath"] for s in predictor.get("storageUris", [])]
    assert all(m.startswith("/") and ".." not in m for m in mounts)
    if len(mounts) > 1:
        assert os.path.commonpath(mounts) not in ("/", "")


def test_the_merged_form_validates_and_points_at_the_registered_files(registered):
    _, run, _ = registered
    manifest, notes = manifest_for(run, "1")
    _validate(manifest)
    model = manifest["spec"]["predictor"]["model"]
    folder = Path(model["storageUri"].removeprefix("file://"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()  # a transformers folder
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert "--backend=vllm" in model["args"] and model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert manifest["metadata"]["annotations"]["fora-pipelines/version"] == "1"
    assert any("not a storage URI KServe reads" in n for n in notes)  # a laptop's registry: local files
    cpu = load_run_config(registered[0], ["serve.gpus=0"])
    cpu_model = manifest_for(cpu, "1")[0]["spec"]["predictor"]["model"]
    assert "--backend=huggingface" in cpu_model["args"] and "nvidia.com/gpu" not in cpu_model["resources"]["limits"]
    _validate(manifest_for(cpu, "1")[0])
    typo = json.loads(json.dumps(manifest))
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError):
        _validate(typo)


def test_the_adapter_form_mounts_base_and_adapter_for_vllm_lora(registered):
    _, run, _ = registered
    manifest, _ = manifest_for(run, "2")  # serve.form auto: version 2 holds only the adapter
    _validate(manifest)
    predictor = manifest["spec"]["predictor"]
    base, adapter = predictor["storageUris"]
    assert base == {"uri": "s3://models/tiny-base", "mountPath": "/mnt/models/base"}
    assert (Path(adapter["uri"].removeprefix("file://")) / "adapter_model.safetensors").is_file()
    args = predictor["model"]["args"]
    assert "--enable-lora" in args and "--max-lora-rank=8" in args  # r = 4: vLLM's smallest max rank is 8
    lora = json.loads(args[args.index("--lora-modules") + 1])
    assert lora == {"name": "tiny-serve", "path": adapter["mountPath"], "base_model_name": "tiny-serve-base"}
    assert "--model_dir=/mnt/models/base" in args
    with pytest.raises(Exception, match="holds only the adapter"):
        manifest_for(load_run_config(registered[0], ["serve.form=merged"]), "2")
    with pytest.raises(Exception, match="local folder the model server cannot read"):
        manifest_for(load_run_config(registered[0], ["serve.base_uri=''"]), "2")


def test_proxied_artifact_uris_map_to_the_servers_bucket():
    uri = "mlflow-artifacts:/1/models/m-0a1b/artifacts/data/merged"
    assert storage_uri(uri, "s3://fora-mlflow/artifacts/") == "s3://fora-mlflow/artifacts/1/models/m-0a1b/artifacts/data/merged"
    assert storage_uri("mlflow-artifacts://mlflow:5000/2/abc/artifacts/adapter", "s3://b/a") == "s3://b/a/2/abc/artifacts/adapter"
    assert storage_uri("s3://x/y", "") == "s3://x/y"
    with pytest.raises(Exception, match="serve.artifacts_destination"):
        storage_uri(uri, "")


def _linear_names(model_dir: Path) -> frozenset[str]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return frozenset(n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and ".layers." in n)


def test_the_adapter_is_what_vllms_loader_reads_and_reproduces_the_merged_weights(registered, tmp_path):
    _, run, model_dir = registered
    files = locate(MlflowClient(run.tracking_uri), "tiny-serve", "1")
    adapter_dir = Path(files.adapter_uri.removeprefix("file://"))
    got = check_vllm_adapter(adapter_dir, _linear_names(model_dir))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (got.rank, got.alpha, got.scale) == (4, 8.0, 2.0) == (config["r"], config["lora_alpha"], 8 / 4)
    # read as vLLM reads it (base_model.model. stripped, module -> A and B, scale alpha / r), the adapter adds
    # exactly what the merged form holds: W = W0 + scale * B A at every adapted module
    from safetensors import safe_open

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    base = {}
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="pt") as f:
        base = {k: f.get_tensor(k) for k in f.keys()}
    merged = load_file(str(Path(files.model_uri.removeprefix("file://")) / "model.safetensors"))
    modules = {k.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] for k in tensors}
    assert modules
    for module in modules:
        a = tensors[f"base_model.model.{module}.lora_A.weight"]
        b = tensors[f"base_model.model.{module}.lora_B.weight"]
        want = base[f"{module}.weight"] + got.scale * b @ a
        assert torch.allclose(merged[f"{module}.weight"], want, atol=1e-5), module
    untouched = next(k for k in base if k.endswith(".weight") and k.rsplit(".weight", 1)[0] not in modules)
    assert torch.equal(merged[untouched], base[untouched])


@pytest.mark.parametrize("change,says", [
    (lambda c, t: c.update(use_dora=True), "use_dora is true; vLLM does not load DoRA"),
    (lambda c, t: c.update(modules_to_save=["lm_head"]), "modules_to_save"),
    (lambda c, t: c.pop("lora_alpha"), "missing lora_alpha"),
    (lambda c, t: c.update(r=600), "vLLM serves ranks 1..512"),
    (lambda c, t: t.update({k.replace("lora_B", "lora_C"): t.pop(k) for k in [next(k for k in t if "lora_B" in k)]}),
     "unsupported LoRA weight"),
    (lambda c, t: t.update({k.replace("q_proj", "rotary"): t.pop(k) for k in [k for k in t if "q_proj" in k]}),
     "is not one vLLM adapts"),
])
def test_what_vllm_refuses_is_refused_in_one_line(registered, tmp_path, change, says):
    _, run, _ = registered
    source = Path(locate(MlflowClient(run.tracking_uri), "tiny-serve", "1").adapter_uri.removeprefix("file://"))
    config = json.loads((source / "adapter_config.json").read_text())
    tensors = load_file(str(source / "adapter_model.safetensors"))
    change(config, tensors)
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(NotServableByVllm) as err:
        check_vllm_adapter(tmp_path)
    assert says in str(err.value) and "\n" not in str(err.value)


def _reference_answer(folder: Path, prompt: str, max_new_tokens: int) -> str:
    """The pipeline's own greedy generation (the held-out scorer's) on a transformers folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.evaluation.heldout import generate_answers

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return generate_answers(model, tokenizer, [tokenizer(prompt)["input_ids"]], max_new_tokens)[0]


@pytest.mark.parametrize("version", ["1", "2"])
def test_mlflow_models_serve_answers_with_the_pipelines_greedy_output(registered, version):
    """Version 1 (merged weights) and version 2 (adapter + base, merged when loaded) over real HTTP."""
    _, run, _ = registered
    merged = Path(locate(MlflowClient(run.tracking_uri), "tiny-serve", "1").model_uri.removeprefix("file://"))
    want = _reference_answer(merged, PROMPT, 6)
    port = free_port()
    server = serve_model(f"models:/tiny-serve/{version}", run.tracking_uri, port)
    try:
        answer = ask_server(port, server, {"inputs": [PROMPT], "params": {"max_new_tokens": 6}})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert [a.strip() for a in answer["predictions"]] == [want]


class _FakeKube:
    """A stand-in for kubernetes.client.CustomObjectsApi (unit test of the deploy logic only)."""

    def __init__(self, live: dict | None = None, status: int | None = None):
        self.live, self.status, self.calls = live, status, []

    def _raise(self, status):
        from kubernetes.client.exceptions import ApiException

        raise ApiException(status=status, reason={403: "Forbidden", 404: "Not Found"}[status])

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        if self.status:
            self._raise(self.status)
        if self.live is None:
            self._raise(404)
        return self.live

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", namespace, body["metadata"]["name"]))

    def replace_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append(("replace", namespace, name, body["metadata"]["resourceVersion"]))


def test_the_deploy_step_applies_only_a_champion_and_only_when_asked(registered):
    config, run, _ = registered
    champion = MlflowClient(run.tracking_uri).get_model_version_by_alias("tiny-serve", "champion").version
    other = "2" if str(champion) == "1" else "1"
    kube = _FakeKube()
    manifest, said = deploy(run, int(champion), api=kube)  # serve.deploy is false: the manifest only
    assert manifest["kind"] == "InferenceService" and kube.calls == [] and "serve.deploy is false" in said
    on = load_run_config(config, ["serve.deploy=true", "serve.namespace=team-a"])
    manifest, said = deploy(on, int(other), api=kube)
    assert kube.calls == [] and "not the champion" in said
    manifest, said = deploy(on, int(champion), api=kube)
    assert kube.calls == [("get", "team-a", "tiny-serve"), ("create", "team-a", "tiny-serve")]
    assert said == f"InferenceService tiny-serve created for champion version {champion}"
    kube = _FakeKube(live={"metadata": {"resourceVersion": "42"}})
    assert apply_inference_service(manifest, api=kube) == "replaced"
    assert kube.calls[-1] == ("replace", "team-a", "tiny-serve", "42")
    with pytest.raises(DeployError, match="answered 403 Forbidden .*get/create/update on inferenceservices"):
        apply_inference_service(manifest, api=_FakeKube(status=403))


def test_serve_manifest_prints_yaml_for_kubectl_and_refuses_an_unknown_alias(registered, capsys):
    config, run, _ = registered
    assert cli.main(["serve-manifest", str(config), "--version", "1"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out) == manifest_for(run, "1")[0]
    assert "'tiny-serve' version 1 (merged) as the merged form" in out.err
    assert cli.main(["serve-manifest", str(config), "--alias", "nightly"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Downloading" not in line]  # bars
    assert len(err) == 1 and "has no version with alias 'nightly'" in err[0]


def test_apply_without_a_namespace_uses_the_kubeconfigs_current_one(tmp_path, monkeypatch):
    """``fora serve-manifest --apply`` outside a pod: the kubeconfig's current context's namespace, as kubectl."""
    from pipelines.config import namespace
    from pipelines.serving.deploy import kubeconfig_namespace

    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "work",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "work", "context": {"cluster": "c", "user": "u", "namespace": "team-ml"}},
                     {"name": "other", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(namespace, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    assert kubeconfig_namespace() == "team-ml"
    text = yaml.safe_load(config.read_text())
    text["current-context"] = "other"
    config.write_text(yaml.safe_dump(text))
    assert kubeconfig_namespace() == "default"
