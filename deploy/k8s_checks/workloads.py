"""Deployments, their Secrets and env, Services, PodDisruptionBudgets, ServiceMonitors."""

import re

from .common import container_env, err, matches, names_in_certificate, of_kind, secret_keys, spec
from .repo import ENV_READ, OWN_SECRETS, REQUIRED_SECRETS


def produced_secrets(objs, broker):
    """Secret name -> (keys, who makes it): ours, and the operators' (cert-manager, RabbitMQ)."""
    out = {n: (secret_keys(d), f"Secret/{n}") for n, d in of_kind(objs, "Secret").items()}
    for n, d in of_kind(objs, "Certificate").items():
        out[spec(d).get("secretName")] = ({"tls.crt", "tls.key", "ca.crt"}, f"Certificate/{n}")
    for n in of_kind(objs, "User"):
        out[f"{n}-user-credentials"] = ({"username", "password"}, f"User/{n} (Topology Operator)")
    if broker:
        out[f"{broker['name']}-default-user"] = (
            {"username", "password", "host", "port", "provider", "type", "default_user.conf"},
            f"RabbitmqCluster/{broker['name']} (the administrator)",
        )
    return out


def check_deployments(objs, broker, secrets):
    configmaps = {n: set((d.get("data") or {}).keys()) for n, d in of_kind(objs, "ConfigMap").items()}
    configmap_readers = {}  # ConfigMap -> binaries that take it whole
    pods = {}
    for name, d in of_kind(objs, "Deployment").items():
        where = f"Deployment/{name}"
        s = spec(d)
        tmpl = s.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if not matches((s.get("selector") or {}), labels):
            err(where, "spec.selector does not match the pod template's labels")
        pspec = tmpl.get("spec") or {}
        if "terminationGracePeriodSeconds" not in pspec:
            err(where, "no terminationGracePeriodSeconds (graceful shutdown needs one)")
        volumes = {v.get("name"): v for v in pspec.get("volumes") or []}
        for vname, v in volumes.items():
            src = v.get("secret")
            if src is not None:
                produced = secrets.get(src.get("secretName"))
                if not produced:
                    err(
                        where,
                        f"volume {vname}: Secret {src.get('secretName')!r} is neither defined nor "
                        "made by an operator here",
                    )
                for item in src.get("items") or []:
                    if produced and item.get("key") not in produced[0]:
                        err(where, f"volume {vname}: {produced[1]} has no key {item.get('key')!r}")
        ports = {}
        for c in pspec.get("containers") or []:
            cw = f"{where}/{c.get('name')}"
            for field in ("name", "image"):
                if not c.get(field):
                    err(cw, f"container without {field}")
            binary = (c.get("args") or [None])[0]
            if binary not in ENV_READ:
                err(cw, f"args[0] {binary!r} is not one of the binaries {sorted(ENV_READ)}")
                continue
            cports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            ports.update(cports)
            for probe in ("readinessProbe", "livenessProbe"):
                get = (c.get(probe) or {}).get("httpGet")
                if not get:
                    err(cw, f"no {probe}.httpGet")
                elif get.get("port") not in set(cports) | set(cports.values()):
                    err(cw, f"{probe} port {get.get('port')!r} is not a container port")
            want = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
            for probe, path in want.items():
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got and got != path:
                    err(cw, f"{probe} must be GET {path} (is {got})")
            mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
            for path, vname in mounts.items():
                if vname not in volumes:
                    err(cw, f"volumeMount {path}: no volume {vname!r}")
            # What the process gets in its environment, and from where.
            visible = {}  # env name -> "ConfigMap/x" | "Secret/x"
            for ref in c.get("envFrom") or []:
                if "configMapRef" in ref:
                    cm = ref["configMapRef"].get("name")
                    if cm not in configmaps:
                        err(cw, f"envFrom ConfigMap {cm!r} is not defined")
                        continue
                    configmap_readers.setdefault(cm, set()).add(binary)
                    visible.update({k: f"ConfigMap/{cm}" for k in configmaps[cm]})
                if "secretRef" in ref:
                    sn = ref["secretRef"].get("name")
                    if sn not in secrets:
                        err(cw, f"envFrom Secret {sn!r} is not defined")
                        continue
                    for k in secrets[sn][0]:
                        visible[k] = f"Secret/{sn}"
                        if k not in ENV_READ[binary]:
                            err(cw, f"envFrom Secret/{sn}: {k} is not read by {binary}")
            env = c.get("env") or []
            expanded = set()
            for v in env:
                expanded |= set(re.findall(r"\$\(([A-Za-z0-9_]+)\)", v.get("value") or ""))
            defined = set(visible)
            for v in env:
                vn = v.get("name")
                for ref in re.findall(r"\$\(([A-Za-z0-9_]+)\)", v.get("value") or ""):
                    if ref not in defined:
                        err(
                            cw,
                            f"env {vn}: $({ref}) is not defined above it (Kubernetes would pass "
                            "the text unchanged)",
                        )
                defined.add(vn)
                if vn not in ENV_READ[binary] and vn not in expanded:
                    err(cw, f"env {vn} is not read by {binary} (nor used in another variable)")
                src = v.get("valueFrom") or {}
                if "secretKeyRef" in src:
                    ref = src["secretKeyRef"]
                    produced = secrets.get(ref.get("name"))
                    if not produced:
                        err(
                            cw,
                            f"env {vn}: Secret {ref.get('name')!r} is neither defined nor made by an "
                            "operator here",
                        )
                    elif ref.get("key") not in produced[0]:
                        err(cw, f"env {vn}: {produced[1]} has no key {ref.get('key')!r}")
                    visible[vn] = f"Secret/{ref.get('name')}"
                if "configMapKeyRef" in src:
                    ref = src["configMapKeyRef"]
                    if ref.get("key") not in configmaps.get(ref.get("name"), set()):
                        err(cw, f"env {vn}: ConfigMap {ref.get('name')!r} has no key {ref.get('key')!r}")
            # One Secret per component: nobody sees another's secrets, or the administrator's.
            for other, keys in OWN_SECRETS.items():
                if other != binary:
                    for k in sorted(keys & set(visible)):
                        err(
                            cw,
                            f"sees {k} ({visible[k]}), a secret of {other}: give each component its "
                            "own Secret",
                        )
            if REQUIRED_SECRETS[binary] not in visible:
                err(cw, f"no {REQUIRED_SECRETS[binary]}")
            for k, src in visible.items():
                if broker and src == f"Secret/{broker['name']}-default-user":
                    err(cw, f"{k} comes from the broker administrator's Secret: use a User of its own")
            pods[name] = {
                "labels": labels,
                "ports": cports,
                "binary": binary,
                "container": c,
                "env": container_env(c),
                "mounts": mounts,
                "volumes": volumes,
                "deployment": d,
            }
    for cm, keys in configmaps.items():
        readers = configmap_readers.get(cm)
        for k in sorted(keys):
            if readers and not any(k in ENV_READ[b] for b in readers):
                err(f"ConfigMap/{cm}", f"{k} is read by none of {sorted(readers)}")
    return pods


def check_services(objs, pods, broker):
    services = {}
    for n, d in of_kind(objs, "Service").items():
        sel = spec(d).get("selector")
        targets = [p for p in pods if sel and all(pods[p]["labels"].get(k) == v for k, v in sel.items())]
        if not targets:
            err(f"Service/{n}", "selector matches no Deployment's pods")
        for t in targets:
            for port in spec(d).get("ports") or []:
                tp = port.get("targetPort")
                if isinstance(tp, str) and tp not in pods[t]["ports"]:
                    err(f"Service/{n}", f"targetPort {tp!r} is not a port of {t}")
        services[n] = (
            d["metadata"].get("labels") or {},
            {p.get("name"): p.get("port") for p in spec(d).get("ports") or []},
            targets,
        )
    if broker:
        for n, (labels, ports) in broker["services"].items():
            services[n] = (labels, ports, ["(broker)"])
    for n, d in of_kind(objs, "PodDisruptionBudget").items():
        sel = spec(d).get("selector")
        if not any(matches(sel, p["labels"]) for p in pods.values()) and not (
            broker and matches(sel, broker["labels"])
        ):
            err(f"PodDisruptionBudget/{n}", "selector matches no pods")
    return services


def check_monitors(objs, pods, services, broker, secrets, certs):
    covered = set()
    for n, d in of_kind(objs, "ServiceMonitor").items():
        where = f"ServiceMonitor/{n}"
        hits = [s for s, (labels, _, _) in services.items() if matches(spec(d).get("selector"), labels)]
        if not hits:
            err(where, "selector matches no Service (label the Service it should scrape)")
        for ep in spec(d).get("endpoints") or []:
            port = ep.get("port")
            if not any(port in services[s][1] for s in hits):
                err(where, f"endpoint port {port!r} is not a named port of {hits}")
            if ep.get("path") != "/metrics":
                err(where, f"endpoint path {ep.get('path')!r}: every target serves /metrics")
            if (ep.get("scheme") or "http").lower() == "https":
                tc = ep.get("tlsConfig") or {}
                ref = (tc.get("ca") or {}).get("secret") or {}
                produced = secrets.get(ref.get("name"))
                if not produced or ref.get("key") not in produced[0]:
                    err(where, f"tlsConfig.ca.secret {ref.get('name')}/{ref.get('key')} does not exist")
                names = names_in_certificate(certs, broker["tls"].get("secretName")) if broker else None
                if names is not None and tc.get("serverName") not in names:
                    err(
                        where,
                        f"tlsConfig.serverName {tc.get('serverName')!r} is not in the broker certificate",
                    )
        for s in hits:
            covered |= set(services[s][2])
    for p in pods:
        if p not in covered:
            err(f"Deployment/{p}", "no ServiceMonitor scrapes its pods (through a Service)")
