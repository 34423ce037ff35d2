#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests, run by deploy/validate-manifests.sh.

usage: check-k8s.py RENDERED SOURCE_DIR [--kubernetes-version X.Y.Z]

RENDERED is `kubectl kustomize SOURCE_DIR` (what `kubectl apply -k` sends). Checked, with no
cluster: core kinds against Kubernetes' own schemas (PyPI kubernetes-validate, strict: unknown
fields are errors) when the module is importable; the CRD kinds' fields against the
operators' CRDs (k8s_checks/schemas.py); then the cross-references a typo breaks silently
(selectors, ports, Secrets and their keys, env names the binaries read, the broker's names
in AMQP_URL and in its certificate, RabbitMQ permissions against the topology, KEDA,
ServiceMonitors) and what NetworkPolicy lets through (k8s_checks/network.py). One
`error: <object>: <what>` line per problem, exit 1.
Run from the repository root (it reads the binaries' sources and rabbitmq.conf).
"""

import glob
import os
import sys

import yaml

from k8s_checks.autoscaling import check_keda
from k8s_checks.broker import (
    broker_model,
    check_amqp,
    check_broker,
    check_certificates,
    check_namespace_names,
)
from k8s_checks.common import err, errors, of_kind
from k8s_checks.network import check_network
from k8s_checks.schemas import check_schemas
from k8s_checks.workloads import check_deployments, check_monitors, check_services, produced_secrets


def load(rendered, source_dir):
    objs = {}
    for d in yaml.safe_load_all(open(rendered)):
        if d is None:
            continue
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
            err(rendered, f"document without apiVersion/kind: {str(d)[:80]}")
            continue
        name = (d.get("metadata") or {}).get("name")
        if not name:
            err(rendered, f"{d['kind']} without metadata.name")
            continue
        key = (d["kind"], name)
        if key in objs:
            err(f"{d['kind']}/{name}", "defined twice")
        objs[key] = d
    # File-level: the kustomization sets the namespace; every file is listed.
    kpath = os.path.join(source_dir, "kustomization.yaml")
    kust = yaml.safe_load(open(kpath))
    for path in sorted(glob.glob(os.path.join(source_dir, "*.yaml"))):
        if path == kpath:
            continue
        for d in yaml.safe_load_all(open(path)):
            if isinstance(d, dict) and "namespace" in (d.get("metadata") or {}):
                err(
                    path,
                    f"{(d.get('metadata') or {}).get('name')}: drop metadata.namespace "
                    "(kustomization.yaml's `namespace:` sets it)",
                )
    listed = set(kust.get("resources") or [])
    present = {os.path.basename(p) for p in glob.glob(os.path.join(source_dir, "*.yaml"))} - {
        "kustomization.yaml"
    }
    for missing in sorted(present - listed):
        err(kpath, f"{missing} is not listed in resources")
    for extra in sorted(listed - present):
        err(kpath, f"resource {extra} does not exist")
    namespace = kust.get("namespace")
    if not namespace:
        err(kpath, "no `namespace:`: the broker's host names need a fixed namespace")
    return objs, namespace


# ---- main ----------------------------------------------------------------------------------------


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    version = None
    if "--kubernetes-version" in argv:
        version = argv[argv.index("--kubernetes-version") + 1]
        args.remove(version)
    if len(args) != 2:
        sys.exit(__doc__)
    rendered, source_dir = args
    objs, namespace = load(rendered, source_dir)
    check_schemas(objs, version)
    broker = broker_model(objs)
    secrets = produced_secrets(objs, broker)
    certs = check_certificates(objs, namespace)
    pods = check_deployments(objs, broker, secrets)
    for name in ("xsolla-ingress", "xsolla-worker", "xsolla-order-status"):
        if name not in pods:
            err("deploy/k8s", f"expected Deployment {name}")
    # Each binary serves its probes and /metrics on its listen address: the port named `http`.
    listen_env = {
        "ingress": ("INGRESS_LISTEN", "0.0.0.0:8080"),
        "worker": ("WORKER_LISTEN", "0.0.0.0:9090"),
        "order-status": ("STATUS_LISTEN", "0.0.0.0:8081"),
    }
    for name, p in pods.items():
        var, default = listen_env[p["binary"]]
        value = (p["env"].get(var) or {}).get("value")
        if value is None:
            taken = [
                r["configMapRef"].get("name")
                for r in p["container"].get("envFrom") or []
                if "configMapRef" in r
            ]
            found = [((of_kind(objs, "ConfigMap").get(n) or {}).get("data") or {}).get(var) for n in taken]
            value = next((v for v in found if v), default)
        if int(value.rsplit(":", 1)[-1]) != p["ports"].get("http"):
            err(
                f"Deployment/{name}",
                f"{var} {value} is not its container port `http` ({p['ports'].get('http')})",
            )
    services = check_services(objs, pods, broker)
    app_users = {}
    if broker:
        check_broker(objs, broker, secrets, certs, of_kind(objs, "PodDisruptionBudget"))
        app_users = check_amqp(pods, broker, objs, certs, namespace)
    check_monitors(objs, pods, services, broker, secrets, certs)
    check_keda(objs, pods, broker, secrets, certs, app_users, namespace)
    check_network(objs, pods, broker, namespace)
    if broker:
        check_namespace_names(objs, broker, namespace)
    for e in errors:
        print("error:", e, file=sys.stderr)
    kinds = sorted({k for k, _ in objs})
    print(f"    {len(objs)} Kubernetes objects ({', '.join(kinds)}): {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
