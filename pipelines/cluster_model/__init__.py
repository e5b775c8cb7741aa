"""A model of the deployment that can fail: every pod fora-pipelines causes to exist on a cluster, with the labels
it will carry, what it must reach and what it may do on the Kubernetes API, each row citing the upstream file it
comes from (``pods.py``, ``needs.py``); and evaluators of the **rendered** manifests under Kubernetes semantics
(``network.py``: NetworkPolicies with pod and namespace selectors, ports, policy types and default deny;
``rbac.py``: Roles and RoleBindings). ``check.py`` puts them together: every needed edge that the policies shut,
every grant broader than the table. No cluster is needed: ``tests/test_cluster_model.py`` runs it on every render.
"""
