"""NetworkPolicy: which connections get through, against what the product needs."""

import ipaddress
import re
from urllib.parse import urlsplit

from .common import err, matches, of_kind, spec


class Peer:
    """A connection's end: a pod (namespace labels + pod labels + named ports) or an address."""

    def __init__(self, what, ns=None, labels=None, ports=None, ip=None):
        self.what, self.ns, self.labels, self.ports, self.ip = what, ns, labels, ports or {}, ip


def peer_selected(peers, peer, own_ns):
    if not peers:
        return True  # no `from`/`to`: everyone
    for p in peers:
        if "ipBlock" in p:
            block = p["ipBlock"]
            if (
                peer.ip
                and ipaddress.ip_address(peer.ip) in ipaddress.ip_network(block["cidr"])
                and not any(
                    ipaddress.ip_address(peer.ip) in ipaddress.ip_network(x)
                    for x in block.get("except") or []
                )
            ):
                return True
            continue
        if peer.ip:
            continue  # an address outside the cluster is no pod
        ns_ok = matches(p["namespaceSelector"], peer.ns) if "namespaceSelector" in p else peer.ns == own_ns
        pod_ok = matches(p["podSelector"], peer.labels) if "podSelector" in p else True
        if ns_ok and pod_ok:
            return True
    return False


def port_selected(ports, port, proto, named):
    if not ports:
        return True
    for p in ports:
        if (p.get("protocol") or "TCP") != proto:
            continue
        want = named.get(p.get("port")) if isinstance(p.get("port"), str) else p.get("port")
        if want is None:
            continue
        if want == port or (p.get("endPort") and want <= port <= p["endPort"]):
            return True
    return False


def policy_types(p):
    s = spec(p)
    return s.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in s else []))


def allowed(policies, own_ns, src, dst, port, proto="TCP"):
    """Whether NetworkPolicy lets src open port/proto on dst (both directions' policies)."""

    def side(pod, other, direction, rule_key, peer_key, named):
        if pod.ip or pod.ns != own_ns:
            return True  # only this namespace's policies are ours to judge
        applying = [
            p
            for p in policies
            if direction in policy_types(p) and matches(spec(p).get("podSelector") or {}, pod.labels)
        ]
        if not applying:
            return True
        return any(
            peer_selected(r.get(peer_key), other, own_ns)
            and port_selected(r.get("ports"), port, proto, named)
            for p in applying
            for r in spec(p).get(rule_key) or []
        )

    return side(src, dst, "Egress", "egress", "to", dst.ports) and side(
        dst, src, "Ingress", "ingress", "from", dst.ports
    )


def check_network(objs, pods, broker, namespace):
    policies = list(of_kind(objs, "NetworkPolicy").values())
    own = {"kubernetes.io/metadata.name": namespace}
    for p in policies:
        sel = spec(p).get("podSelector") or {}
        if (
            sel
            and not any(matches(sel, q["labels"]) for q in pods.values())
            and not (broker and matches(sel, broker["labels"]))
        ):
            err(f"NetworkPolicy/{p['metadata']['name']}", "podSelector matches no pods")
        for rule in spec(p).get("ingress") or []:
            for port in rule.get("ports") or []:
                if isinstance(port.get("port"), str):
                    targets = [q for q in pods.values() if matches(sel, q["labels"])]
                    if not targets or any(port["port"] not in q["ports"] for q in targets):
                        err(
                            f"NetworkPolicy/{p['metadata']['name']}",
                            f"port {port['port']!r} is not a named port " "of every pod it selects",
                        )
    if not broker:
        return
    by_binary = {
        q["binary"]: Peer(f"the {q['binary']} pods", own, q["labels"], q["ports"]) for q in pods.values()
    }
    missing = {"ingress", "worker", "order-status"} - set(by_binary)
    if missing:
        return err("deploy/k8s", f"no Deployment runs {sorted(missing)}")
    ing, wrk, sts = by_binary["ingress"], by_binary["worker"], by_binary["order-status"]
    rmq = Peer("a broker pod", own, broker["labels"])
    internet = Peer("the internet", ip="203.0.113.7")
    elsewhere = Peer("a pod of another namespace", {"kubernetes.io/metadata.name": "elsewhere"}, {"app": "x"})
    stranger = Peer("another pod of this namespace", own, {"app": "x"})

    def ns(what, name, labels):
        return Peer(f"{what} (namespace {name})", {"kubernetes.io/metadata.name": name}, labels)

    prometheus = ns("Prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
    keda = ns("KEDA", "keda", {"app": "keda-operator"})
    operators = ns(
        "the RabbitMQ operators", "rabbitmq-system", {"app.kubernetes.io/name": "messaging-topology-operator"}
    )
    dns = ns("DNS", "kube-system", {"k8s-app": "kube-dns"})
    inventory_url = (
        (of_kind(objs, "ConfigMap").get("xsolla-bridge") or {}).get("data", {}).get("INVENTORY_URL", "")
    )
    m = re.fullmatch(
        r"[a-z0-9-]+\.([a-z0-9-]+)\.svc(\.cluster\.local)?", urlsplit(inventory_url).hostname or ""
    )
    inventory = ns("the inventory API", m.group(1), {"app": "inventory"}) if m else None
    http = lambda p: p.ports.get("http")
    expect = [
        (internet, ing, http(ing), True),
        (internet, sts, http(sts), True),
        (elsewhere, ing, http(ing), True),
        (internet, wrk, http(wrk), False),
        (elsewhere, wrk, http(wrk), False),
        (prometheus, wrk, http(wrk), True),
        (ing, rmq, 5671, True),
        (wrk, rmq, 5671, True),
        (sts, rmq, 5671, True),
        (keda, rmq, 5671, True),
        (internet, rmq, 5671, False),
        (elsewhere, rmq, 5671, False),
        (stranger, rmq, 5671, False),
        (rmq, rmq, 4369, True),
        (rmq, rmq, 25672, True),
        (rmq, rmq, 6000, True),
        (stranger, rmq, 25672, False),
        (operators, rmq, 15671, True),
        (prometheus, rmq, 15691, True),
        (wrk, dns, 53, True),
        (sts, dns, 53, True),
        (wrk, internet, 443, False),
        (wrk, elsewhere, 443, False),
        (wrk, ing, http(ing), False),
        (sts, internet, 443, False),
        (sts, elsewhere, 443, False),
    ]
    if inventory:
        expect.append((wrk, inventory, 80, True))
    else:
        err(
            "ConfigMap/xsolla-bridge",
            f"INVENTORY_URL {inventory_url!r} is not a <service>.<namespace>.svc name: "
            "check the worker's egress to it by hand",
        )
    for src, dst, port, want in expect:
        protos = ["UDP", "TCP"] if port == 53 else ["TCP"]
        for proto in protos:
            got = allowed(policies, own, src, dst, port, proto)
            if got != want:
                err(
                    "NetworkPolicy",
                    f"{src.what} -> {dst.what} port {port}/{proto}: "
                    f"{'allowed' if got else 'blocked'}, should be {'allowed' if want else 'blocked'}",
                )
