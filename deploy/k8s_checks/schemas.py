"""The objects' fields: core kinds against Kubernetes' schemas, CRD kinds against CRD_FIELDS."""

import functools

from .common import err, spec

# Field names and types as in the CRDs of RabbitMQ Cluster Operator 2.22 (RabbitmqCluster),
# Messaging Topology Operator 1.20 (User, Permission), cert-manager 1.x (Certificate, Issuer),
# KEDA 2.16+ (ScaledObject, TriggerAuthentication) and prometheus-operator 0.9x
# (ServiceMonitor). A key ending in "!" is required. Values: "str", "int", "bool", "intstr",
# "map" (any keys), "object" (not looked into), "list" (of anything), "list:<type>",
# "enum:a|b", a dict (an object with exactly these fields) or [dict] (a list of those).
STR_MAP = "map:str"
CLUSTER_REF = {"name": "str", "namespace": "str", "connectionSecret": "object"}
HPA_RULES = {
    "policies": [{"type!": "enum:Pods|Percent", "value!": "int", "periodSeconds!": "int"}],
    "selectPolicy": "enum:Max|Min|Disabled",
    "stabilizationWindowSeconds": "int",
    "tolerance": "intstr",
}
TARGET_REF = [{"parameter!": "str", "name!": "str", "key!": "str"}]
CERT_USAGES = (
    "signing|digital signature|content commitment|key encipherment|key agreement|"
    "data encipherment|cert sign|crl sign|encipher only|decipher only|any|server auth|"
    "client auth|code signing|email protection|s/mime|ipsec end system|ipsec tunnel|"
    "ipsec user|timestamping|ocsp signing|microsoft sgc|netscape sgc"
)
CRD_FIELDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): {
        "replicas": "int",
        "image": "str",
        "imagePullSecrets": "list",
        "affinity": "object",
        "tolerations": "list",
        "override": "object",
        "secretBackend": "object",
        "skipPostDeploySteps": "bool",
        "terminationGracePeriodSeconds": "int",
        "delayStartSeconds": "int",
        "autoEnableAllFeatureFlags": "bool",
        "persistence": {"storage": "intstr", "storageClassName": "str", "emptyDir": "object"},
        "resources": {"requests": "map", "limits": "map", "claims": "list"},
        "service": {
            "type": "enum:ClusterIP|LoadBalancer|NodePort",
            "annotations": STR_MAP,
            "labels": STR_MAP,
            "ipFamilyPolicy": "enum:SingleStack|PreferDualStack|RequireDualStack",
        },
        "rabbitmq": {
            "additionalConfig": "str",
            "additionalPlugins": "list:str",
            "advancedConfig": "str",
            "envConfig": "str",
            "erlangInetConfig": "str",
        },
        "tls": {"secretName": "str", "caSecretName": "str", "disableNonTLSListeners": "bool"},
    },
    ("rabbitmq.com/v1beta1", "User"): {
        "rabbitmqClusterReference!": CLUSTER_REF,
        "importCredentialsSecret": {"name": "str"},
        "tags": "list:enum:management|policymaker|monitoring|administrator",
        "limits": {"connections": "int", "channels": "int"},
    },
    ("rabbitmq.com/v1beta1", "Permission"): {
        "vhost!": "str",
        "user": "str",
        "userReference": {"name": "str"},
        "permissions!": {"configure": "str", "write": "str", "read": "str"},
        "rabbitmqClusterReference!": CLUSTER_REF,
    },
    ("cert-manager.io/v1", "Certificate"): {
        "secretName!": "str",
        "issuerRef!": {"name!": "str", "kind": "str", "group": "str"},
        "dnsNames": "list:str",
        "ipAddresses": "list:str",
        "uris": "list:str",
        "emailAddresses": "list:str",
        "commonName": "str",
        "literalSubject": "str",
        "subject": "object",
        "isCA": "bool",
        "duration": "str",
        "renewBefore": "str",
        "renewBeforePercentage": "int",
        "renewal": "object",
        "usages": "list:enum:" + CERT_USAGES,
        "privateKey": {
            "algorithm": "enum:RSA|ECDSA|Ed25519",
            "size": "int",
            "encoding": "enum:PKCS1|PKCS8",
            "rotationPolicy": "enum:Never|Always",
        },
        "secretTemplate": "object",
        "keystores": "object",
        "additionalOutputFormats": "list",
        "encodeUsagesInRequest": "bool",
        "nameConstraints": "object",
        "otherNames": "list",
        "revisionHistoryLimit": "int",
        "signatureAlgorithm": "str",
    },
    ("cert-manager.io/v1", "Issuer"): {
        "selfSigned": "object",
        "acme": "object",
        "vault": "object",
        "venafi": "object",
        "ca": {
            "secretName!": "str",
            "crlDistributionPoints": "list:str",
            "ocspServers": "list:str",
            "issuingCertificateURLs": "list:str",
        },
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "scaleTargetRef!": {
            "name!": "str",
            "kind": "str",
            "apiVersion": "str",
            "envSourceContainerName": "str",
        },
        "minReplicaCount": "int",
        "maxReplicaCount": "int",
        "pollingInterval": "int",
        "cooldownPeriod": "int",
        "initialCooldownPeriod": "int",
        "idleReplicaCount": "int",
        "fallback": "object",
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "name": "str",
                "behavior": {"scaleUp": HPA_RULES, "scaleDown": HPA_RULES},
            },
            "restoreToOriginalReplicaCount": "bool",
            "scalingModifiers": "object",
        },
        "triggers!": [
            {
                "type!": "str",
                "name": "str",
                "metadata!": STR_MAP,
                "metricType": "str",
                "useCachedMetrics": "bool",
                "authenticationRef": {
                    "name!": "str",
                    "kind": "enum:TriggerAuthentication|ClusterTriggerAuthentication",
                },
            }
        ],
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "secretTargetRef": TARGET_REF,
        "configMapTargetRef": TARGET_REF,
        "env": "list",
        "podIdentity": "object",
        "hashiCorpVault": "object",
        "azureKeyVault": "object",
        "awsSecretManager": "object",
        "gcpSecretManager": "object",
        "boundServiceAccountToken": "list",
        "filePath": "str",
        "oauth2": "object",
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "selector!": {"matchLabels": STR_MAP, "matchExpressions": "list"},
        "namespaceSelector": {"any": "bool", "matchNames": "list:str"},
        "endpoints!": [
            {
                "port": "str",
                "targetPort": "intstr",
                "path": "str",
                "scheme": "enum:http|https|HTTP|HTTPS",
                "interval": "str",
                "scrapeTimeout": "str",
                "honorLabels": "bool",
                "honorTimestamps": "bool",
                "relabelings": "list",
                "metricRelabelings": "list",
                "params": "map",
                "authorization": "object",
                "basicAuth": "object",
                "oauth2": "object",
                "bearerTokenSecret": "object",
                "bearerTokenFile": "str",
                "proxyUrl": "str",
                "noProxy": "str",
                "proxyFromEnvironment": "bool",
                "proxyConnectHeader": "map",
                "followRedirects": "bool",
                "enableHttp2": "bool",
                "filterRunning": "bool",
                "trackTimestampsStaleness": "bool",
                "tlsConfig": {
                    "ca": {
                        "secret": {"name": "str", "key!": "str", "optional": "bool"},
                        "configMap": "object",
                    },
                    "cert": "object",
                    "keySecret": "object",
                    "caFile": "str",
                    "certFile": "str",
                    "keyFile": "str",
                    "serverName": "str",
                    "insecureSkipVerify": "bool",
                    "minVersion": "enum:TLS10|TLS11|TLS12|TLS13",
                    "maxVersion": "enum:TLS10|TLS11|TLS12|TLS13",
                },
            }
        ],
        "jobLabel": "str",
        "targetLabels": "list:str",
        "podTargetLabels": "list:str",
        "sampleLimit": "int",
        "targetLimit": "int",
        "labelLimit": "int",
        "labelNameLengthLimit": "int",
        "labelValueLengthLimit": "int",
        "keepDroppedTargets": "int",
        "attachMetadata": "object",
        "scrapeClass": "str",
        "scrapeProtocols": "list:str",
        "fallbackScrapeProtocol": "str",
        "bodySizeLimit": "str",
        "scrapeClassicHistograms": "bool",
        "scrapeNativeHistograms": "bool",
        "nativeHistogramBucketLimit": "int",
        "nativeHistogramMinBucketFactor": "intstr",
        "convertClassicHistogramsToNHCB": "bool",
        "selectorMechanism": "enum:RelabelConfig|RoleSelector",
        "serviceDiscoveryRole": "enum:Endpoints|EndpointSlice",
    },
}


def check_fields(where, value, spec, path):
    """Checks `value` against a CRD_FIELDS entry; errors name the field's path."""
    here = f"{where}: {path}"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return err(here, f"must be an object, not {type(value).__name__}")
        fields = {k.rstrip("!"): v for k, v in spec.items()}
        for k in spec:
            if k.endswith("!") and k[:-1] not in value:
                err(here, f"required field {k[:-1]} is missing")
        for k, v in value.items():
            if k not in fields:
                err(here, f"unknown field {k!r} (known: {', '.join(sorted(fields))})")
            else:
                check_fields(where, v, fields[k], f"{path}.{k}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            return err(here, "must be a list")
        for i, item in enumerate(value):
            check_fields(where, item, spec[0], f"{path}[{i}]")
    elif spec.startswith("list"):
        if not isinstance(value, list):
            return err(here, "must be a list")
        if spec.startswith("list:"):
            for i, item in enumerate(value):
                check_fields(where, item, spec[5:], f"{path}[{i}]")
    elif spec.startswith("enum:"):
        if value not in spec[5:].split("|"):
            err(here, f"{value!r} is not one of {spec[5:].split('|')}")
    elif spec.startswith("map"):
        if not isinstance(value, dict):
            return err(here, "must be a map")
        if spec == STR_MAP:
            for k, v in value.items():
                if not isinstance(v, str):
                    err(here, f"{k}: must be a string (quote it), not {type(v).__name__}")
    else:
        ok = {"str": (str,), "int": (int,), "bool": (bool,), "intstr": (int, str), "object": (dict,)}[spec]
        if not isinstance(value, ok) or (spec == "int" and isinstance(value, bool)):
            err(here, f"must be {spec}, not {type(value).__name__} {value!r}")


def check_schemas(objs, kubernetes_version):
    """Core kinds against Kubernetes' schemas (kubernetes-validate), CRD kinds against CRD_FIELDS."""
    try:
        from kubernetes_validate import utils as kv

        # It reads and parses the shared definitions (megabytes) once per object otherwise.
        kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    except ImportError:
        kv = None
        if kubernetes_version:
            err("schemas", "kubernetes-validate is not importable (validate-manifests.sh installs it)")
    for (kind, name), d in objs.items():
        where = f"{kind}/{name}"
        fields = CRD_FIELDS.get((d["apiVersion"], kind))
        if fields is not None:
            check_fields(where, spec(d), fields, "spec")
            continue
        if kv is None or not kubernetes_version:
            continue
        try:
            kv.validate(d, kubernetes_version, strict=True)
        except kv.SchemaNotFoundError:
            err(
                where,
                f"{d['apiVersion']} {kind} is neither a Kubernetes {kubernetes_version} kind "
                "nor in check-k8s.py's CRD_FIELDS",
            )
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            err(where, f"{path}: {e.message} (Kubernetes {kubernetes_version} schema)")
