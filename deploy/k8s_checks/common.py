"""What every check uses: the error list, selectors, object access."""

errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def of_kind(objs, kind):
    return {n: d for (k, n), d in objs.items() if k == kind}


def spec(d):
    return d.get("spec") or {}


def matches(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def secret_keys(d):
    return set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())


def container_env(c):
    return {v.get("name"): v for v in c.get("env") or []}


def names_in_certificate(certs, secret_name):
    for d in certs.values():
        if spec(d).get("secretName") == secret_name:
            return set(spec(d).get("dnsNames") or [])
    return None  # a Secret made by hand: its names are not known here
