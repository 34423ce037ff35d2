"""The broker: the RabbitmqCluster, its certificate, the components' AMQP_URL and users."""

import os
import re
from urllib.parse import urlsplit

import yaml

from .common import err, matches, names_in_certificate, of_kind, spec
from .repo import TOPOLOGY_NAMES, rabbitmq_conf


def broker_model(objs):
    """The RabbitmqCluster and what the Cluster Operator makes from it: pods, Services, Secrets."""
    clusters = of_kind(objs, "RabbitmqCluster")
    if len(clusters) != 1:
        err("deploy/k8s", f"expected one RabbitmqCluster, found {len(clusters)}")
        return None
    name, d = next(iter(clusters.items()))
    s = spec(d)
    tls = s.get("tls") or {}
    tls_only = bool(tls.get("disableNonTLSListeners"))
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "rabbitmq",
        "app.kubernetes.io/part-of": "rabbitmq",
    }
    client_ports = {"amqps": 5671, "management-tls": 15671, "prometheus-tls": 15691} if tls else {}
    if not tls_only:
        client_ports.update({"amqp": 5672, "management": 15672, "prometheus": 15692})
    return {
        "name": name,
        "spec": s,
        "replicas": s.get("replicas", 1),
        "labels": labels,
        "tls": tls,
        "services": {
            name: (labels, client_ports),
            f"{name}-nodes": (labels, {"epmd": 4369, "cluster-rpc": 25672}),
        },
    }


def check_broker(objs, broker, secrets, certs, pdbs):
    where = f"RabbitmqCluster/{broker['name']}"
    s, n = broker["spec"], broker["replicas"]
    if n < 3 or n % 2 == 0:
        err(where, f"replicas {n}: run an odd number, at least 3 (a majority must survive a node)")
    anti = ((s.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []
    if not any(
        t.get("topologyKey") == "kubernetes.io/hostname" and matches(t.get("labelSelector"), broker["labels"])
        for t in anti
    ):
        err(
            where,
            "needs required pod anti-affinity on kubernetes.io/hostname selecting its own pods "
            "(two nodes on one machine would lose the majority together)",
        )
    tls = broker["tls"]
    for field, key in (("secretName", "tls.crt"), ("secretName", "tls.key"), ("caSecretName", "ca.crt")):
        produced = secrets.get(tls.get(field))
        if not produced:
            err(
                where,
                f"spec.tls.{field} {tls.get(field)!r}: no such Secret here (nor a Certificate making it)",
            )
        elif key not in produced[0]:
            err(where, f"spec.tls.{field}: {produced[1]} has no {key}")
    if not tls.get("disableNonTLSListeners"):
        err(where, "spec.tls.disableNonTLSListeners should be true: every client here uses amqps://")
    res = s.get("resources") or {}
    mem_limit = (res.get("limits") or {}).get("memory")
    if not mem_limit or (res.get("requests") or {}).get("memory") != mem_limit:
        err(
            where,
            "set resources.limits.memory, equal to requests.memory: the memory alarm is a fraction of it",
        )
    if not (s.get("persistence") or {}).get("storage"):
        err(where, "no persistence.storage")
    # rabbitmq.conf's settings, the same here.
    extra = {}
    for line in ((s.get("rabbitmq") or {}).get("additionalConfig") or "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if "=" not in line:
                err(where, f"additionalConfig: {line!r} is not `key = value`")
                continue
            k, v = (x.strip() for x in line.split("=", 1))
            extra[k] = v
    for k, v in rabbitmq_conf().items():
        if extra.get(k) != v:
            err(where, f"additionalConfig: {k} = {extra.get(k)!r}, deploy/rabbitmq/rabbitmq.conf has {v!r}")
    # A drain must leave a majority.
    covering = [p for p in pdbs.values() if matches(spec(p).get("selector"), broker["labels"])]
    ok = any(
        (spec(p).get("maxUnavailable") is not None and int(spec(p)["maxUnavailable"]) <= (n - 1) // 2)
        or (spec(p).get("minAvailable") is not None and int(spec(p)["minAvailable"]) > n // 2)
        for p in covering
    )
    if not ok:
        err(where, f"no PodDisruptionBudget keeps a majority ({n // 2 + 1} of {n}) of its pods up")


def check_certificates(objs, namespace):
    certs = of_kind(objs, "Certificate")
    issuers = of_kind(objs, "Issuer")
    ca_secrets = {spec(d).get("secretName"): n for n, d in certs.items() if spec(d).get("isCA")}
    for n, d in certs.items():
        ref = spec(d).get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in issuers:
            err(f"Certificate/{n}", f"issuerRef: no Issuer {ref.get('name')!r}")
        if spec(d).get("isCA") and not (spec(d).get("commonName") or spec(d).get("dnsNames")):
            err(f"Certificate/{n}", "a CA needs a commonName")
    for n, d in issuers.items():
        ca = spec(d).get("ca")
        if ca and ca.get("secretName") not in ca_secrets:
            err(
                f"Issuer/{n}",
                f"ca.secretName {ca.get('secretName')!r} is not made by a Certificate with isCA: true",
            )
    return certs


def check_amqp(pods, broker, objs, certs, namespace):
    """AMQP_URL lists the broker's pods by their stable names, over TLS, as the component's own user."""
    users = of_kind(objs, "User")
    perms = of_kind(objs, "Permission")
    tls = broker["tls"]
    cert_names = names_in_certificate(certs, tls.get("secretName"))
    c, n = broker["name"], broker["replicas"]
    want = {f"{c}-server-{i}.{c}-nodes.{namespace}.svc" for i in range(n)}
    app_users = {}
    for name, p in pods.items():
        cw = f"Deployment/{name}"
        env = p["env"]
        url = (env.get("AMQP_URL") or {}).get("value")
        if not url:
            err(cw, "no AMQP_URL value")
            continue
        hosts, refs = set(), set()
        for i, entry in enumerate(e.strip() for e in url.split(",")):
            u = urlsplit(entry)
            ew = f"{cw}: AMQP_URL entry {i + 1}"
            if u.scheme != "amqps":
                err(ew, f"scheme {u.scheme!r}: use amqps:// (the broker listens on TLS only)")
            try:
                port = u.port
            except ValueError:
                port = None
            if port != 5671:
                err(ew, f"port {port}: the broker's AMQPS port is 5671")
            if u.path != "/%2f":
                err(ew, f"vhost path {u.path!r}: the users' permissions are on the `/` vhost (%2f)")
            hosts.add(u.hostname)
            for part in (u.username, u.password):
                m = re.fullmatch(r"\$\(([A-Za-z0-9_]+)\)", part or "")
                if not m:
                    err(ew, "user and password must be $(VARIABLES) from the component's credentials Secret")
                else:
                    refs.add(m.group(1))
            if cert_names is not None and u.hostname not in cert_names:
                err(ew, f"{u.hostname} is not in the broker certificate's dnsNames")
        if hosts != want:
            err(
                cw,
                f"AMQP_URL must list each of the {n} broker pods once: missing {sorted(want - hosts)}, "
                f"unexpected {sorted(hosts - want)}",
            )
        sources = set()
        for r in refs:
            ref = ((env.get(r) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            sources.add(ref.get("name") or f"(no Secret for ${r})")
        owner = [u for u in users if f"{u}-user-credentials" in sources]
        if len(sources) != 1 or not owner:
            err(
                cw,
                f"AMQP_URL's user and password must come from one User's <name>-user-credentials, not {sorted(sources)}",
            )
        else:
            if owner[0] in app_users.values():
                err(cw, f"shares the RabbitMQ User {owner[0]} with another component")
            app_users[name] = owner[0]
        ca = (env.get("AMQP_CA_FILE") or {}).get("value")
        if not ca:
            err(cw, "no AMQP_CA_FILE: the broker's certificate comes from a private CA")
        else:
            vname = p["mounts"].get(os.path.dirname(ca))
            vol = (p["volumes"].get(vname) or {}).get("secret") or {}
            items = {i.get("path"): i.get("key") for i in vol.get("items") or []}
            key = items.get(os.path.basename(ca)) if items else os.path.basename(ca)
            if (
                vol.get("secretName") not in (tls.get("secretName"), tls.get("caSecretName"))
                or key != "ca.crt"
            ):
                err(
                    cw,
                    f"AMQP_CA_FILE {ca} is not the broker CA's ca.crt mounted from "
                    f"{tls.get('secretName')} (mount its directory, item ca.crt)",
                )
    # Permissions: enough for the topology every component declares.
    for user in users:
        if not any((spec(p).get("userReference") or {}).get("name") == user for p in perms.values()):
            err(f"User/{user}", "no Permission refers to it")
    for pn, p in perms.items():
        ref = (spec(p).get("userReference") or {}).get("name")
        if ref not in users:
            err(f"Permission/{pn}", f"userReference {ref!r} is not a User here")
        for obj in (p, users.get(ref)):
            if obj and (spec(obj).get("rabbitmqClusterReference") or {}).get("name") != c:
                err(f"{obj['kind']}/{obj['metadata']['name']}", f"rabbitmqClusterReference must name {c}")
    for name, user in app_users.items():
        granted = [
            p
            for p in perms.values()
            if (spec(p).get("userReference") or {}).get("name") == user and spec(p).get("vhost") == "/"
        ]
        if not granted:
            err(f"User/{user}", "no Permission on vhost / (the vhost of AMQP_URL)")
            continue
        rules = spec(granted[0]).get("permissions") or {}
        for kind, needed in (
            ("configure", TOPOLOGY_NAMES),
            ("read", TOPOLOGY_NAMES),
            ("write", TOPOLOGY_NAMES + ["amq.default"]),
        ):
            for obj_name in needed:
                if not re.search(rules.get(kind) or "^$", obj_name):
                    err(
                        f"Permission/{granted[0]['metadata']['name']}",
                        f"{kind} {rules.get(kind)!r} does not match {obj_name}, which {pods[name]['binary']} "
                        "declares or publishes to",
                    )
    return app_users


def check_namespace_names(objs, broker, namespace):
    """Every `<our service>.<ns>.svc` name in the manifests names the kustomization's namespace."""
    ours = {n for n in of_kind(objs, "Service")} | (set(broker["services"]) if broker else set())
    ours |= (
        {f"{broker['name']}-server-{i}.{broker['name']}-nodes" for i in range(broker["replicas"])}
        if broker
        else set()
    )
    text = yaml.safe_dump_all(list(objs.values()))
    for m in re.finditer(r"([a-z0-9.-]+?)\.([a-z0-9-]+)\.svc\b", text):
        if m.group(1).split("@")[-1] in ours and m.group(2) != namespace:
            err(
                "deploy/k8s",
                f"{m.group(0)} names namespace {m.group(2)!r}, the kustomization's is {namespace!r}",
            )
