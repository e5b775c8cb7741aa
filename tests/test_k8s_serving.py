"""k8s/components/serving: the Role is exactly what the deploy step calls, bound to the pipeline's account; only
the deploy pod may reach the Kubernetes API; the predictor's account names the S3 Secret KServe reads."""

import ast
import re
from pathlib import Path

import pytest
from k8s_render import overlay, render_with_any

from pipelines.serving import deploy

ROOT = Path(__file__).resolve().parent.parent
# kubernetes.client.CustomObjectsApi method -> the API verb it needs
VERBS = {"get": "get", "create": "create", "replace": "update", "patch": "patch", "delete": "delete", "list": "list"}


def _called_verbs() -> set[str]:
    """The verbs deploy.py's API calls need, read from its source."""
    tree = ast.parse(Path(deploy.__file__).read_text())
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    return {VERBS[m.group(1)] for c in calls for m in [re.match(r"(\w+?)_namespaced_custom_object$", c)] if m}


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return render_with_any(overlay(tmp_path_factory.mktemp("serving"), "team-serve", ["serving"]))


def test_the_deployer_role_is_exactly_what_the_deploy_step_calls(docs):
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "fora-serving-deployer")
    assert _called_verbs() == {"get", "create", "update"}
    assert role["rules"] == [{"apiGroups": [deploy.GROUP], "resources": [deploy.PLURAL],
                              "verbs": sorted(_called_verbs(), key=["get", "create", "update"].index)}]
    binding = next(d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "fora-serving-deployer")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fora-pipeline", "namespace": "team-serve"}]


def test_the_predictor_account_names_the_s3_secret_kserve_reads(docs):
    from pipelines.config.serve import ServeConfig

    account = next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "fora-serving")
    assert account["metadata"]["name"] == ServeConfig().service_account
    assert account["secrets"] == [{"name": "fora-serving-s3"}]
    import yaml

    example = yaml.safe_load((ROOT / "k8s" / "examples" / "optional" / "serving-s3.example.yaml").read_text())
    assert example["metadata"]["name"] == "fora-serving-s3"
    assert {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps"} <= set(example["metadata"]["annotations"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(example["stringData"])
