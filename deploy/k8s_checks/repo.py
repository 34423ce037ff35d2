"""Facts read from the repository: the env names the binaries read, the topology's names, rabbitmq.conf."""

import glob
import re
import sys


def rust_env_names(*dirs):
    names = set()
    for d in dirs:
        for path in glob.glob(f"{d}/**/*.rs", recursive=True):
            names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', open(path).read()))
    return names


def rust_const(path, name):
    m = re.search(rf'pub const {name}: &str = "([^"]+)";', open(path).read())
    if not m:
        sys.exit(f"error: {path}: no `pub const {name}: &str` (the checks read it)")
    return m.group(1)


ENV_READ = {  # binary -> environment variables it reads (clap `env = "…"`), RUST_LOG by tracing
    "ingress": rust_env_names("shared/src", "ingress/src") | {"RUST_LOG"},
    "order-status": rust_env_names("shared/src", "ingress/src") | {"RUST_LOG"},
    "worker": rust_env_names("shared/src", "worker/src") | {"RUST_LOG"},
}
TOPOLOGY = "shared/src/topology.rs"
WORK_QUEUE = rust_const(TOPOLOGY, "WORK_QUEUE")
# What every component declares (exchanges, queues, a delay tier, the stream).
TOPOLOGY_NAMES = sorted(
    {
        rust_const(TOPOLOGY, n)
        for n in ("EXCHANGE", "UNROUTED_EXCHANGE", "UNROUTED_QUEUE", "WORK_QUEUE", "DLQ")
    }
    | {rust_const(TOPOLOGY, "RETRY_QUEUE_PREFIX") + "10s", rust_const("shared/src/order_events.rs", "STREAM")}
)
# Each binary's own secrets: visible to it and to no other component.
OWN_SECRETS = {
    "ingress": {"XSOLLA_WEBHOOK_SECRET", "USER_CHECK_TOKEN"},
    "worker": {"INVENTORY_TOKEN"},
    "order-status": {"STATUS_JWT_HS256_SECRET"},
}
REQUIRED_SECRETS = {
    "ingress": "XSOLLA_WEBHOOK_SECRET",
    "worker": "INVENTORY_TOKEN",
    "order-status": "STATUS_JWT_HS256_SECRET",
}


def rabbitmq_conf(path="deploy/rabbitmq/rabbitmq.conf"):
    pairs = {}
    for line in open(path).read().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = (s.strip() for s in line.split("=", 1))
            pairs[k] = v
    return pairs
