"""NetworkPolicy semantics (networking.k8s.io/v1), as the Kubernetes API documents them
(kubernetes ``pkg/apis/networking/types.go`` and the "Network Policies" concept page), evaluated over a world of
endpoints:

* a pod is *isolated* for a direction when some policy of its namespace selects it (``podSelector``) with that
  direction in ``policyTypes`` (absent: ``Ingress``, plus ``Egress`` when the policy has an ``egress`` section);
* traffic A -> B:port/protocol flows when A is not isolated for egress or some egress rule of a policy selecting A
  admits (B, port), **and** B is not isolated for ingress or some ingress rule of a policy selecting B admits
  (A, port); rules are additive, a policy with no rules denies;
* a rule without ``ports`` admits every port, without ``to``/``from`` every peer; a port entry is a protocol
  (default TCP), a number or a name (the destination container's named port) and an optional ``endPort``;
* a peer is ``podSelector`` (pods of the policy's namespace), ``namespaceSelector`` (every pod of the matching
  namespaces), both (matching pods in matching namespaces), or ``ipBlock`` (a CIDR with ``except``).

Policies are enforced after the Service address is translated (kube-proxy DNAT happens first on the node: Calico,
Cilium, kube-router and OVN match the endpoint's address and port), so the model's endpoints are pod, node and
external addresses with the ports they listen on, never Service ports. What ``ipBlock`` matches is left to the
network plugin: Calico matches any address, pods and nodes included; Cilium (default ``policy-cidr-match-mode``)
only addresses outside the cluster, never pods, nodes or host-network pods such as a kubeadm API server
(docs.cilium.io, "Layer 3 Examples: IP/CIDR based"). ``CNIS`` names both; a needed edge must flow under each.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .selectors import matches

CNIS = ("calico", "cilium")


@dataclass(eq=False)
class Endpoint:
    """A pod, a node (``host``: the kubelet, a host-network API server, NodeLocal DNSCache) or an address outside
    the cluster (``external``). ``ports``: (number, protocol, name) it listens on."""

    name: str
    kind: str
    ip: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[int, str, str], ...] = ()

    def port_name(self, port: int, protocol: str) -> str | None:
        return next((n for p, pr, n in self.ports if p == port and pr == protocol and n), None)


@dataclass
class Cluster:
    """Namespaces (name -> labels) and NetworkPolicies (rendered objects, each with metadata.namespace)."""

    namespaces: Mapping[str, Mapping[str, str]]
    policies: list[dict]

    def selecting(self, pod: Endpoint, direction: str) -> list[dict]:
        """The policies that isolate ``pod`` for ``direction`` (Ingress or Egress)."""
        if pod.kind != "pod":
            return []
        return [p for p in self.policies if p["metadata"].get("namespace") == pod.namespace
                and matches(p["spec"].get("podSelector"), pod.labels) and direction in policy_types(p["spec"])]

    def allows(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP", cni: str = "calico") -> bool:
        """Whether traffic from ``src`` to ``dst`` on ``port``/``protocol`` flows under these policies."""
        egress = self.selecting(src, "Egress")
        if egress and not any(self._rule_admits(rule.get("to"), rule, pol, dst, dst, port, protocol, cni)
                              for pol in egress for rule in pol["spec"].get("egress") or []):
            return False
        ingress = self.selecting(dst, "Ingress")
        return not ingress or any(self._rule_admits(rule.get("from"), rule, pol, src, dst, port, protocol, cni)
                                  for pol in ingress for rule in pol["spec"].get("ingress") or [])

    def _rule_admits(self, peers: list | None, rule: dict, policy: dict, peer: Endpoint, dst: Endpoint, port: int,
                     protocol: str, cni: str) -> bool:
        """One rule: ``peers`` (its ``to`` or ``from``) against ``peer``, its ports against ``dst``'s port."""
        ports = rule.get("ports")
        if ports and not any(port_matches(entry, dst, port, protocol) for entry in ports):
            return False
        return not peers or any(self._peer_matches(p, policy["metadata"]["namespace"], peer, cni) for p in peers)

    def _peer_matches(self, peer: dict, policy_namespace: str, who: Endpoint, cni: str) -> bool:
        if "ipBlock" in peer:
            if cni == "cilium" and who.kind != "external":
                return False
            block = peer["ipBlock"]
            address = ipaddress.ip_address(who.ip)
            inside = address in ipaddress.ip_network(block["cidr"], strict=False)
            return inside and not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
        if who.kind != "pod":
            return False
        if "namespaceSelector" in peer:
            if not matches(peer["namespaceSelector"], self.namespaces.get(who.namespace, {})):
                return False
        elif who.namespace != policy_namespace:
            return False
        return matches(peer.get("podSelector"), who.labels)


def policy_types(spec: Mapping) -> list[str]:
    """``policyTypes``, defaulted as the API server does (networking/v1 defaults.go)."""
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def port_matches(entry: Mapping, dst: Endpoint, port: int, protocol: str) -> bool:
    """One NetworkPolicyPort against traffic to ``dst`` on ``port``/``protocol``."""
    if entry.get("protocol", "TCP") != protocol:
        return False
    want = entry.get("port")
    if want is None:
        return True
    if isinstance(want, str) and not want.isdigit():  # a named port: the destination container's
        return dst.port_name(port, protocol) == want
    return int(want) <= port <= int(entry.get("endPort", want))


def flows(cluster: Cluster, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP",
          cnis: Iterable[str] = CNIS) -> dict[str, bool]:
    """{cni: allowed} for one edge."""
    return {cni: cluster.allows(src, dst, port, protocol, cni) for cni in cnis}
