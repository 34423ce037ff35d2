"""KEDA: the ScaledObject scaling the workers on the work queue, and its TriggerAuthentication."""

import re
from urllib.parse import urlsplit

from .common import err, matches, names_in_certificate, of_kind, spec
from .repo import TOPOLOGY, TOPOLOGY_NAMES, WORK_QUEUE


def check_keda(objs, pods, broker, secrets, certs, app_users, namespace):
    pdbs = of_kind(objs, "PodDisruptionBudget")
    configmaps = of_kind(objs, "ConfigMap")
    auths = of_kind(objs, "TriggerAuthentication")
    perms = of_kind(objs, "Permission")
    scaled = set()
    for n, d in of_kind(objs, "ScaledObject").items():
        where = f"ScaledObject/{n}"
        s = spec(d)
        target = (s.get("scaleTargetRef") or {}).get("name")
        if target not in pods:
            err(where, f"scaleTargetRef {target!r} is not a Deployment here")
            continue
        scaled.add(target)
        if "replicas" in spec(pods[target]["deployment"]):
            err(f"Deployment/{target}", "drop spec.replicas: KEDA sets them (an apply would reset the count)")
        lo, hi = s.get("minReplicaCount", 0), s.get("maxReplicaCount", 100)
        if lo < 2:
            err(where, f"minReplicaCount {lo}: keep at least 2 workers")
        if hi < lo:
            err(where, f"maxReplicaCount {hi} < minReplicaCount {lo}")
        for p in pdbs.values():
            if (
                matches(spec(p).get("selector"), pods[target]["labels"])
                and spec(p).get("minAvailable") is not None
                and int(spec(p)["minAvailable"]) >= lo
            ):
                err(
                    where,
                    f"minReplicaCount {lo} must exceed PodDisruptionBudget/{p['metadata']['name']}'s "
                    f"minAvailable {spec(p)['minAvailable']}, or no drain can evict a worker",
                )
        for i, t in enumerate(s.get("triggers") or []):
            tw = f"{where}: triggers[{i}]"
            md = t.get("metadata") or {}
            known = {
                "host",
                "protocol",
                "mode",
                "value",
                "activationValue",
                "queueName",
                "vhostName",
                "hostFromEnv",
                "usernameFromEnv",
                "passwordFromEnv",
                "unsafeSsl",
                "useRegex",
                "pageSize",
                "operation",
                "timeout",
                "excludeUnacknowledged",
                "queueLength",
            }
            if t.get("type") != "rabbitmq":
                err(tw, f"type {t.get('type')!r}: expected the rabbitmq scaler")
                continue
            for k in sorted(set(md) - known):
                err(tw, f"metadata: unknown rabbitmq parameter {k!r}")
            if md.get("queueName") != WORK_QUEUE:
                err(tw, f"queueName {md.get('queueName')!r} is not the work queue {WORK_QUEUE} ({TOPOLOGY})")
            if md.get("mode") != "QueueLength" or not re.fullmatch(r"[1-9][0-9]*", str(md.get("value"))):
                err(tw, "scale on mode QueueLength with a positive whole `value` (messages per replica)")
            u = urlsplit(md.get("host") or "")
            if u.scheme != "amqps" or u.port != 5671 or u.username or u.password:
                err(
                    tw,
                    "host must be amqps://<broker Service>:5671/<vhost>, credentials from the TriggerAuthentication",
                )
            if broker and u.hostname != f"{broker['name']}.{namespace}.svc":
                err(tw, f"host {u.hostname!r} is not the broker's Service {broker['name']}.{namespace}.svc")
            names = names_in_certificate(certs, broker["tls"].get("secretName")) if broker else None
            if names is not None and u.hostname not in names:
                err(tw, f"host {u.hostname} is not in the broker certificate's dnsNames")
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref not in auths:
                err(tw, f"authenticationRef {ref!r} is not a TriggerAuthentication here")
                continue
            check_trigger_auth(auths[ref], secrets, configmaps, perms, broker, app_users)
    for p in pods:
        if pods[p]["binary"] == "worker" and p not in scaled:
            replicas = spec(pods[p]["deployment"]).get("replicas", 1)
            if replicas < 2:
                err(f"Deployment/{p}", "run at least 2 workers (replicas, or a ScaledObject)")


def check_trigger_auth(d, secrets, configmaps, perms, broker, app_users):
    where = f"TriggerAuthentication/{d['metadata']['name']}"
    params = {}
    for field, store in (("secretTargetRef", "Secret"), ("configMapTargetRef", "ConfigMap")):
        for r in spec(d).get(field) or []:
            name, key = r.get("name"), r.get("key")
            if store == "Secret":
                produced = secrets.get(name)
                if not produced or key not in produced[0]:
                    err(where, f"{field} {r.get('parameter')}: Secret {name}/{key} does not exist")
                value = None
            else:
                data = (configmaps.get(name) or {}).get("data") or {}
                if key not in data:
                    err(where, f"{field} {r.get('parameter')}: ConfigMap {name}/{key} does not exist")
                value = data.get(key)
            params[r.get("parameter")] = (name, key, value)
    known = {
        "host",
        "username",
        "password",
        "tls",
        "ca",
        "cert",
        "key",
        "keyPassword",
        "protocol",
        "vhostName",
        "workloadIdentityResource",
    }
    for p in sorted(set(params) - known):
        err(where, f"unknown rabbitmq parameter {p!r}")
    if (params.get("tls") or (None, None, None))[2] != "enable":
        err(where, "parameter tls must be `enable` (amqps://); the scaler reads it from here only")
    if broker and params.get("ca", (None, None))[:2] not in (
        (broker["tls"].get("secretName"), "ca.crt"),
        (broker["tls"].get("caSecretName"), "ca.crt"),
    ):
        err(where, "parameter ca must be the broker CA's ca.crt")
    cred = {params.get(k, (None,))[0] for k in ("username", "password")}
    user = (
        next(iter(cred))[: -len("-user-credentials")]
        if len(cred) == 1 and next(iter(cred)) and next(iter(cred)).endswith("-user-credentials")
        else None
    )
    if not user:
        err(where, "username and password must come from one User's <name>-user-credentials")
        return
    if user in app_users.values():
        err(where, f"uses {user}, a component's user: give KEDA its own (it needs no read or write)")
    for p in perms.values():
        if (spec(p).get("userReference") or {}).get("name") == user:
            rules = spec(p).get("permissions") or {}
            for kind in ("configure", "write", "read"):
                hit = [q for q in TOPOLOGY_NAMES if re.search(rules.get(kind) or "^$", q)]
                if hit:
                    err(
                        f"Permission/{p['metadata']['name']}",
                        f"{kind} matches {hit}: KEDA's passive declare needs no permission",
                    )
