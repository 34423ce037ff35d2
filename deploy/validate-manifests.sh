#!/usr/bin/env bash
# Offline checks of the deployment files (no cluster, no Docker engine, no downloads):
#   * deploy/k8s/*.yaml: parse, required fields, and the cross-references that a typo
#     breaks silently (selectors vs pod labels, probe/Service ports, envFrom targets, the
#     kustomization's resource list);
#   * deploy/docker-compose.yml: parse and references (plus `docker compose config` when a
#     compose plugin is installed, and the typed Compose spec when PyPI's compose-spec is);
#   * deploy/Dockerfile: its Cargo profile exists, the binaries it copies are the
#     workspace's, its COPY sources exist, it has a HEALTHCHECK;
#   * deploy/rabbitmq/rabbitmq.conf: `key = value` syntax;
#   * shell scripts: `bash -n`, and shellcheck when installed.
# Needs python3 with PyYAML for the YAML checks; without it they are skipped (said so).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> shell scripts"
for f in deploy/*.sh .ci/run; do bash -n "$f"; done
if command -v shellcheck >/dev/null 2>&1; then
	shellcheck -x deploy/*.sh .ci/run
else
	echo "    (shellcheck not installed: syntax checked only)"
fi

echo "==> Dockerfile"
python3 - <<'PY'
import glob, os, re, sys
errors = []
text = open("deploy/Dockerfile").read()
cargo = open("Cargo.toml").read()
# Binaries of the workspace: <crate>/src/main.rs (the crate's name) and src/bin/<name>.
bins = set()
for main in glob.glob("*/src/main.rs"):
    m = re.search(r'^name\s*=\s*"([^"]+)"', open(os.path.join(main.split("/")[0], "Cargo.toml")).read(), re.M)
    if m:
        bins.add(m.group(1))
for b in glob.glob("*/src/bin/*"):
    bins.add(os.path.basename(b).removesuffix(".rs"))
for profile in re.findall(r"cargo build [^\n]*--profile (\S+)", text):
    if f"[profile.{profile}]" not in cargo:
        errors.append(f"cargo build --profile {profile}: no [profile.{profile}] in Cargo.toml")
    for name in re.findall(rf"target/{re.escape(profile)}/([A-Za-z0-9_-]+)", text):
        if name not in bins:
            errors.append(f"target/{profile}/{name} is not a binary of the workspace {sorted(bins)}")
for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) \S+$", text, re.M):
    if src != "." and not os.path.exists(src):
        errors.append(f"COPY {src}: no such file in the build context")
if not re.search(r"^HEALTHCHECK .*CMD", text, re.M):
    errors.append("no HEALTHCHECK")
for e in errors:
    print("error: deploy/Dockerfile:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY

echo "==> rabbitmq.conf"
if grep -nvE '^[[:space:]]*(#.*)?$|^[a-z0-9_.]+[[:space:]]*=[[:space:]]*[^[:space:]].*$' deploy/rabbitmq/rabbitmq.conf; then
	echo "error: lines above are not 'key = value' or comments" >&2
	exit 1
fi

if docker compose version >/dev/null 2>&1; then
	echo "==> docker compose config"
	docker compose -f deploy/docker-compose.yml config -q
fi
# The Compose specification as Rust types (PyPI `compose-spec`, the compose_spec crate):
# catches wrong value types and unknown enum values. Used only when already installed.
if python3 -c 'import compose_spec' 2>/dev/null; then
	echo "==> docker-compose.yml against the Compose specification"
	python3 -c 'from compose_spec import compose_spec as c
c.PyOptions(apply_merge=True).from_yaml(open("deploy/docker-compose.yml").read()).validate()'
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
	echo "==> YAML checks skipped: python3 has no yaml module (pip install pyyaml)"
	exit 0
fi

echo "==> Kubernetes manifests and docker-compose.yml"
python3 - <<'PY'
import glob, os, sys
import yaml

errors = []
def err(where, msg):
    errors.append(f"{where}: {msg}")

# ---- Kubernetes ------------------------------------------------------------------
docs = []  # (file, doc)
for path in sorted(glob.glob("deploy/k8s/*.yaml")):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc is not None:
                docs.append((path, doc))

objs = {}  # (kind, name) -> (file, doc)
kustomization = None
for path, d in docs:
    if not isinstance(d, dict):
        err(path, "document is not a mapping"); continue
    for field in ("apiVersion", "kind"):
        if not d.get(field):
            err(path, f"missing {field}")
    if d.get("kind") == "Kustomization":
        kustomization = (path, d); continue
    meta = d.get("metadata") or {}
    name = meta.get("name")
    if not name:
        err(path, f"{d.get('kind')} without metadata.name"); continue
    if "namespace" in meta:
        err(path, f"{name}: manifests are namespace-less; drop metadata.namespace")
    key = (d["kind"], name)
    if key in objs:
        err(path, f"duplicate {key}")
    objs[key] = (path, d)

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

deployments = {n: d for (k, n), (_, d) in objs.items() if k == "Deployment"}
pod_labels = {}
for name, d in deployments.items():
    where = f"Deployment/{name}"
    spec = d.get("spec") or {}
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    pod_labels[name] = labels
    if not matches((spec.get("selector") or {}).get("matchLabels"), labels):
        err(where, "spec.selector.matchLabels does not match the pod template labels")
    pspec = tmpl.get("spec") or {}
    if "terminationGracePeriodSeconds" not in pspec:
        err(where, "no terminationGracePeriodSeconds (graceful shutdown needs one)")
    containers = pspec.get("containers") or []
    if not containers:
        err(where, "no containers")
    for c in containers:
        cw = f"{where}/{c.get('name')}"
        for field in ("name", "image"):
            if not c.get(field):
                err(cw, f"container without {field}")
        ports = {p.get("name") for p in c.get("ports") or []} | {p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("readinessProbe", "livenessProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                err(cw, f"no {probe}.httpGet"); continue
            if get.get("port") not in ports:
                err(cw, f"{probe} port {get.get('port')!r} is not a container port")
        for ref in c.get("envFrom") or []:
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in ref and (kind, ref[field].get("name")) not in objs:
                    err(cw, f"envFrom {kind} {ref[field].get('name')!r} is not defined")
        for var in c.get("env") or []:
            src = var.get("valueFrom") or {}
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if field not in src:
                    continue
                target = objs.get((kind, src[field].get("name")))
                if not target:
                    err(cw, f"env {var.get('name')}: {kind} {src[field].get('name')!r} is not defined")
                    continue
                keys = {**(target[1].get("data") or {}), **(target[1].get("stringData") or {})}
                if src[field].get("key") not in keys:
                    err(cw, f"env {var.get('name')}: {kind} {src[field].get('name')} has no key {src[field].get('key')!r}")

for (kind, name), (path, d) in objs.items():
    if kind == "Service":
        sel = (d.get("spec") or {}).get("selector")
        targets = [n for n, l in pod_labels.items() if matches(sel, l)]
        if not targets:
            err(f"Service/{name}", "selector matches no Deployment's pods")
        for t in targets:
            names = {p.get("name") for c in deployments[t]["spec"]["template"]["spec"]["containers"] for p in c.get("ports") or []}
            for p in d["spec"].get("ports") or []:
                tp = p.get("targetPort")
                if isinstance(tp, str) and tp not in names:
                    err(f"Service/{name}", f"targetPort {tp!r} is not a port of {t}")
    if kind == "PodDisruptionBudget":
        sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if not any(matches(sel, l) for l in pod_labels.values()):
            err(f"PodDisruptionBudget/{name}", "selector matches no Deployment's pods")

# What the product needs (docs/design.md, "Deployment": probes, two workers, secrets).
ing = deployments.get("xsolla-ingress")
wrk = deployments.get("xsolla-worker")
if not ing or not wrk:
    err("deploy/k8s", "expected Deployments xsolla-ingress and xsolla-worker")
else:
    c = ing["spec"]["template"]["spec"]["containers"][0]
    if (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
        err("Deployment/xsolla-ingress", "readinessProbe must be GET /readyz")
    if (c.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
        err("Deployment/xsolla-ingress", "livenessProbe must be GET /healthz")
    if (wrk["spec"].get("replicas") or 1) < 2:
        err("Deployment/xsolla-worker", "run at least 2 replicas")
st = deployments.get("xsolla-order-status")
if not st:
    err("deploy/k8s", "expected Deployment xsolla-order-status")
else:
    c = st["spec"]["template"]["spec"]["containers"][0]
    if (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
        err("Deployment/xsolla-order-status", "readinessProbe must be GET /readyz")
    if (c.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
        err("Deployment/xsolla-order-status", "livenessProbe must be GET /healthz")
    cm = objs.get(("ConfigMap", "xsolla-bridge"))
    listen = ((cm[1].get("data") or {}) if cm else {}).get("STATUS_LISTEN", "0.0.0.0:8081")
    ports = {p.get("containerPort") for p in c.get("ports") or []}
    if int(listen.rsplit(":", 1)[-1]) not in ports:
        err("Deployment/xsolla-order-status", f"STATUS_LISTEN {listen} is not a container port {sorted(ports)}")
    names = {v.get("name") for v in c.get("env") or []}
    if "AMQP_URL" not in names and not any("secretRef" in r and r["secretRef"].get("name") == "xsolla-bridge" for r in c.get("envFrom") or []):
        err("Deployment/xsolla-order-status", "no AMQP_URL")
st_secret = objs.get(("Secret", "xsolla-order-status"))
if not st_secret or "STATUS_JWT_HS256_SECRET" not in {**(st_secret[1].get("stringData") or {}), **(st_secret[1].get("data") or {})}:
    err("deploy/k8s", "expected Secret xsolla-order-status with STATUS_JWT_HS256_SECRET")
secret = objs.get(("Secret", "xsolla-bridge"))
if secret:
    data = {**(secret[1].get("stringData") or {}), **(secret[1].get("data") or {})}
    for k in ("XSOLLA_WEBHOOK_SECRET", "INVENTORY_TOKEN"):
        if k not in data:
            err("Secret/xsolla-bridge", f"missing {k}")
else:
    err("deploy/k8s", "expected Secret xsolla-bridge")

if kustomization:
    path, k = kustomization
    listed = set(k.get("resources") or [])
    present = {os.path.basename(p) for p in glob.glob("deploy/k8s/*.yaml")} - {os.path.basename(path)}
    for missing in sorted(present - listed):
        err(path, f"{missing} is not listed in resources")
    for extra in sorted(listed - present):
        err(path, f"resource {extra} does not exist")

# ---- docker-compose --------------------------------------------------------------
cpath = "deploy/docker-compose.yml"
with open(cpath) as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
volumes = set((compose.get("volumes") or {}).keys())
for name, s in services.items():
    where = f"{cpath}: service {name}"
    if not (s.get("image") or s.get("build")):
        err(where, "neither image nor build")
    build = s.get("build")
    if isinstance(build, dict):
        ctx = os.path.normpath(os.path.join("deploy", build.get("context", ".")))
        if not os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))):
            err(where, f"Dockerfile {build.get('dockerfile')} not found in context {ctx}")
    deps = s.get("depends_on") or {}
    for dep in (deps if isinstance(deps, (list, dict)) else []):
        if dep not in services:
            err(where, f"depends_on unknown service {dep}")
    for v in s.get("volumes") or []:
        src = v.split(":")[0] if isinstance(v, str) else v.get("source")
        if src.startswith((".", "/")):
            if not os.path.exists(os.path.join("deploy", src)):
                err(where, f"bind mount source {src} does not exist")
        elif src not in volumes:
            err(where, f"named volume {src} is not declared")
    env = s.get("environment") or {}
    if isinstance(env, dict):
        for k, val in env.items():
            if val is None:
                err(where, f"environment {k} has no value")
for needed in ("rabbitmq", "ingress", "worker", "order-status", "demo-inventory"):
    if needed not in services:
        err(cpath, f"missing service {needed}")
if "healthcheck" not in services.get("rabbitmq", {}):
    err(cpath, "rabbitmq needs a healthcheck (the others wait for it)")
if ((services.get("worker") or {}).get("deploy") or {}).get("replicas", 1) < 2:
    err(cpath, "worker: deploy.replicas should be 2")

for e in errors:
    print("error:", e, file=sys.stderr)
print(f"    {len(docs)} Kubernetes documents, {len(services)} compose services checked")
sys.exit(1 if errors else 0)
PY
echo "==> manifests OK"

# ---- deploy/observability: alert rules and dashboard ------------------------------------
# promtool checks the rules (syntax, PromQL, templates) and, through a throw-away rules file,
# the dashboard's queries. It comes from Debian's `prometheus` package: only the promtool
# binary is unpacked (`apt-get download` + `dpkg -x`, ~20 MB, seconds) into a cache, because
# installing the package would also install and start a Prometheus server on :9090.
echo "==> Prometheus rules and Grafana dashboard (deploy/observability)"
find_promtool() {
	if command -v promtool >/dev/null 2>&1; then
		command -v promtool
		return
	fi
	local cache="${XDG_CACHE_HOME:-$HOME/.cache}/xsolla-bridge/promtool"
	if [ ! -x "$cache/promtool" ] && command -v apt-get >/dev/null 2>&1; then
		local tmp
		tmp="$(mktemp -d)"
		if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
			# Empty package lists (fresh container): refresh them when we may.
			if [ "$(id -u)" -eq 0 ]; then
				apt-get update -qq >/dev/null 2>&1 || true
				(cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || true
			fi
		fi
		if ls "$tmp"/prometheus_*.deb >/dev/null 2>&1; then
			dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
			mkdir -p "$cache"
			cp "$tmp/x/usr/bin/promtool" "$cache/promtool"
		fi
		rm -rf "$tmp"
	fi
	if [ -x "$cache/promtool" ]; then
		echo "$cache/promtool"
	fi
}
PROMTOOL="$(find_promtool)"
if [ -z "$PROMTOOL" ]; then
	echo "error: promtool not found and could not be fetched from Debian's 'prometheus' package" >&2
	echo "       (install it: apt-get install --no-install-recommends prometheus, or put promtool on PATH)" >&2
	exit 1
fi
"$PROMTOOL" check rules deploy/observability/alerts.yml
dashboard_rules="$(mktemp --suffix=.yml)"
trap 'rm -f "$dashboard_rules"' EXIT
python3 - "$dashboard_rules" <<'PY'
import json, sys
import yaml

errors = []
rules = yaml.safe_load(open("deploy/observability/alerts.yml"))
operator = yaml.safe_load(open("deploy/observability/prometheusrule.yaml"))
if operator.get("apiVersion") != "monitoring.coreos.com/v1" or operator.get("kind") != "PrometheusRule":
    errors.append("prometheusrule.yaml: not a monitoring.coreos.com/v1 PrometheusRule")
if not (operator.get("metadata") or {}).get("name"):
    errors.append("prometheusrule.yaml: metadata.name missing")
if (operator.get("spec") or {}).get("groups") != rules.get("groups"):
    errors.append("prometheusrule.yaml: spec.groups differ from alerts.yml's groups (keep them identical)")

api = yaml.safe_load(open("deploy/user-api-openapi.yaml"))
if not str(api.get("openapi", "")).startswith("3.") or "/users/{user_id}" not in (api.get("paths") or {}):
    errors.append("user-api-openapi.yaml: not an OpenAPI 3 document with /users/{user_id}")

dashboard = json.load(open("deploy/observability/dashboard.json"))
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels") or [])
exprs, ids = [], set()
for p in walk(dashboard.get("panels") or []):
    if p.get("id") in ids:
        errors.append(f"dashboard.json: duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if p.get("type") == "row":
        continue
    targets = [t for t in p.get("targets") or [] if (t.get("expr") or "").strip()]
    if not targets:
        errors.append(f"dashboard.json: panel {p.get('title')!r} has no query")
    exprs += [t["expr"] for t in targets]
if not exprs:
    errors.append("dashboard.json: no panels")
# Grafana's interval variables are not PromQL; give promtool a plain range instead.
records = [{"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
           for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": records}]}, open(sys.argv[1], "w"))
for e in errors:
    print("error:", e, file=sys.stderr)
print(f"    {len(rules['groups'][0]['rules'])} alert rules, PrometheusRule identical; {len(exprs)} dashboard queries")
sys.exit(1 if errors else 0)
PY
"$PROMTOOL" check rules "$dashboard_rules"
echo "==> observability OK"
