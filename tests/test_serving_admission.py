"""k8s/cluster-admin/serving-policy: the ValidatingAdmissionPolicy that holds the pipeline's account to serving as
``fora-serving`` on KServe's Hugging Face runtime. Rendered by kustomize, checked against the Kubernetes 1.33
schemas, and its CEL evaluated as the API server does (a real CEL implementation, cel-python): the match
condition picks exactly the pipeline account's requests, every validation passes for both forms the deploy step
renders, and each way of escaping it (another account, an image, a command, a sidecar, a transformer, another
runtime) is denied with its message. A validation that errors counts as a denial (failurePolicy: Fail)."""

from __future__ import annotations

import copy

import celpy
import kubernetes_validate
import pytest
from k8s_render import K8S, render_with_any

from pipelines.config.serve import ServeConfig
from pipelines.serving.inference_service import render
from pipelines.serving.vllm_lora import VllmAdapter

NS = "team-serve"
PIPELINE_USER = f"system:serviceaccount:{NS}:fora-pipeline"


@pytest.fixture(scope="module")
def policy():
    docs = render_with_any(K8S / "cluster-admin" / "serving-policy")
    assert {d["kind"] for d in docs} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for d in docs:
        kubernetes_validate.validate(d, "1.33", strict=True)
        assert "namespace" not in d["metadata"]  # cluster-scoped
    vap = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}
    assert vap["spec"]["failurePolicy"] == "Fail"
    return vap


def _true(expression: str, activation: dict) -> bool:
    env = celpy.Environment()
    try:
        return bool(env.program(env.compile(expression)).evaluate(celpy.json_to_cel(activation)))
    except Exception:  # a CEL evaluation error: the API server denies (failurePolicy Fail)
        return False


def admit(vap: dict, obj: dict, user: str = PIPELINE_USER, operation: str = "CREATE") -> list[str]:
    """The denial messages for a request (an empty list admits it), as the API server evaluates the policy."""
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    group, resource = obj["apiVersion"].split("/")[0], "inferenceservices"
    if not any(group in r["apiGroups"] and resource in r["resources"] and operation in r["operations"] for r in rules):
        return []
    activation = {"request": {"userInfo": {"username": user}, "namespace": NS, "operation": operation},
                  "object": obj}
    if not all(_true(c["expression"], activation) for c in vap["spec"]["matchConditions"]):
        return []
    return [v["message"] for v in vap["spec"]["validations"] if not _true(v["expression"], activation)]


def _forms() -> list[dict]:
    serve = ServeConfig()
    merged = render(name="m", namespace=NS, serve=serve, backend="vllm", model_name="m", version=1,
                    merged_uri="s3://b/merged")
    adapter = render(name="m", namespace=NS, serve=serve, backend="vllm", model_name="m", version=2,
                     base_uri="hf://org/base", adapter_uri="s3://b/adapter",
                     adapter=VllmAdapter(rank=32, alpha=64, scale=2.0, max_lora_rank=32,
                                                    modules=frozenset({"q_proj"})))
    cpu = render(name="m", namespace=NS, serve=ServeConfig(gpus=0), backend="huggingface", model_name="m", version=3,
                 merged_uri="s3://b/merged")
    return [merged, adapter, cpu]


def test_what_the_deploy_step_renders_is_admitted(policy):
    for isvc in _forms():
        assert admit(policy, isvc) == [], isvc


def _mutants(isvc: dict):
    def changed(fn):
        obj = copy.deepcopy(isvc)
        fn(obj["spec"])
        return obj

    p = "predictor"
    yield "ServiceAccount", changed(lambda s: s[p].update(serviceAccountName="default"))
    yield "ServiceAccount", changed(lambda s: s[p].pop("serviceAccountName"))
    yield "Hugging Face runtime", changed(lambda s: s[p]["model"].update(runtime="my-runtime"))
    yield "Hugging Face runtime", changed(lambda s: s[p]["model"].pop("runtime"))
    yield "Hugging Face runtime", changed(lambda s: s[p]["model"].update(modelFormat={"name": "custom"}))
    yield "no image", changed(lambda s: s[p]["model"].update(image="evil.example.com/miner:1"))
    yield "no image", changed(lambda s: s[p]["model"].update(command=["sh", "-c", "curl x | sh"]))
    yield "no image", changed(lambda s: s[p]["model"].update(env=[{"name": "A", "value": "b"}]))
    yield "no containers", changed(lambda s: s[p].update(containers=[{"name": "x", "image": "busybox"}]))
    yield "no containers", changed(lambda s: s[p].update(hostNetwork=True))
    yield "no containers", changed(lambda s: s[p].update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]))
    yield "predictor only", changed(lambda s: s.update(transformer={"containers": [{"name": "t", "image": "x"}]}))
    yield "predictor only", changed(lambda s: s.update(explainer={"containers": [{"name": "e", "image": "x"}]}))


def test_every_escape_is_denied_with_its_message(policy):
    merged = _forms()[0]
    count = 0
    for expected, mutant in _mutants(merged):
        messages = admit(policy, mutant)
        assert any(expected in m for m in messages), (expected, messages)
        assert admit(policy, mutant, operation="UPDATE"), "updates are held to the same rules"
        count += 1
    assert count == 13


def test_only_the_pipeline_accounts_requests_are_held(policy):
    evil = copy.deepcopy(_forms()[0])
    evil["spec"]["predictor"]["serviceAccountName"] = "default"
    assert admit(policy, evil, user="alice@example.com") == []  # people keep what RBAC gives them
    assert admit(policy, evil, user=f"system:serviceaccount:{NS}:other") == []
    assert admit(policy, evil, user="system:serviceaccount:another-ns:fora-pipeline") == []  # request.namespace is NS
    assert admit(policy, evil) != []
    assert admit(policy, evil, operation="DELETE") == []  # only CREATE and UPDATE are matched
