"""Checks of the Kubernetes manifests under deploy/, run by tests/integration/deploy.rs with the
virtual environment that scripts/test.sh creates (requirements.txt beside this file).

  check_deploy.py schemas VERSION... -- FILE...   every object against the Kubernetes schemas
  check_deploy.py restricted FILE...              every pod template against the restricted profile
                                                  and what the gateway needs to run and stop well
  check_deploy.py same FILE < RENDERED            FILE holds the same objects as RENDERED (kustomize's
                                                  output), whatever the formatting

Each finding is one line "FAIL <file> <kind>/<name>: <what>"; the exit status is 1 when any. Each
object checked is reported with "ok" so the test output shows what was covered.
"""

import hashlib
import re
import sys
import tomllib

import kubernetes_validate
import yaml

POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
# Volume types the restricted profile allows (Pod Security Standards, "Volume Types").
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}
CHECKSUM_ANNOTATION = "checksum/config"

failures = 0


def fail(where, what):
    global failures
    failures += 1
    print(f"FAIL {where}: {what}")


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# schemas


def check_service_monitor(where, doc, services):
    """No schema ships for this custom resource: check the fields the operator needs, and that it
    selects a Service of the same rendering with the named port."""
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        fail(where, f"apiVersion {doc.get('apiVersion')!r}, expected monitoring.coreos.com/v1")
    spec = doc.get("spec") or {}
    labels = (spec.get("selector") or {}).get("matchLabels")
    if not isinstance(labels, dict) or not labels:
        fail(where, "spec.selector.matchLabels is missing")
        return
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        fail(where, "spec.endpoints is missing")
        return
    selected = [
        s for s in services
        if labels.items() <= ((s.get("metadata") or {}).get("labels") or {}).items()
    ]
    if not selected:
        fail(where, f"selects no Service of this file (matchLabels {labels})")
    for i, ep in enumerate(endpoints):
        if not isinstance(ep, dict) or not isinstance(ep.get("port"), str):
            fail(where, f"spec.endpoints[{i}].port must name a Service port")
            continue
        if not str(ep.get("path", "/metrics")).startswith("/"):
            fail(where, f"spec.endpoints[{i}].path must start with /")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(ep[key])):
                fail(where, f"spec.endpoints[{i}].{key} {ep[key]!r} is not a duration")
        for s in selected:
            ports = [p.get("name") for p in (s.get("spec") or {}).get("ports") or []]
            if ep["port"] not in ports:
                fail(where, f"Service {s['metadata']['name']} has no port named {ep['port']!r}")


def schemas(versions, paths):
    for path in paths:
        docs = load(path)
        services = [d for d in docs if d.get("kind") == "Service"]
        for doc in docs:
            where = f"{path} {name_of(doc)}"
            if doc.get("kind") == "ServiceMonitor":
                before = failures
                check_service_monitor(where, doc, services)
                if failures == before:
                    print(f"ok   {where}: structure (no schema ships for this CRD; "
                          f"kubernetes-validate has none)")
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError as e:
                    fail(where, f"no schema for {doc.get('apiVersion')} {doc.get('kind')} "
                                f"in Kubernetes {version}: {e}")
                except kubernetes_validate.ValidationError as e:
                    location = ".".join(str(p) for p in e.path) or "(top)"
                    fail(where, f"Kubernetes {version}: {location}: {e.message}")
                else:
                    print(f"ok   {where}: Kubernetes {version} schema (strict)")


# ---------------------------------------------------------------------------------------------
# restricted profile


def pod_template(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return doc.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


def duration_seconds(text):
    """A gateway.toml duration ("90s", "15m", "1h30m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"([0-9]+)\s*(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"cannot read duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def effective(pod_sc, c_sc, key):
    return c_sc.get(key, pod_sc.get(key))


def check_container(where, c, pod_sc):
    sc = c.get("securityContext") or {}
    name = f"container {c.get('name')}"
    if sc.get("privileged") is True:
        fail(where, f"{name}: privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(where, f"{name}: securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        fail(where, f"{name}: securityContext.capabilities.drop must contain ALL")
    for cap in caps.get("add") or []:
        if cap != "NET_BIND_SERVICE":
            fail(where, f"{name}: capability {cap} added (only NET_BIND_SERVICE is allowed)")
    if effective(pod_sc, sc, "runAsNonRoot") is not True:
        fail(where, f"{name}: runAsNonRoot must be true (pod or container)")
    uid = effective(pod_sc, sc, "runAsUser")
    if not isinstance(uid, int) or uid == 0:
        fail(where, f"{name}: runAsUser must be set and non-zero (pod or container), got {uid!r}")
    seccomp = (effective(pod_sc, sc, "seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        fail(where, f"{name}: seccompProfile.type must be RuntimeDefault or Localhost, got {seccomp!r}")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(where, f"{name}: securityContext.readOnlyRootFilesystem must be true")
    for p in c.get("ports") or []:
        if p.get("hostPort"):
            fail(where, f"{name}: hostPort {p['hostPort']}")
    if not ((c.get("resources") or {}).get("limits") or {}).get("memory"):
        fail(where, f"{name}: resources.limits.memory is not set")


def check_gateway(where, meta, spec, c, configmaps, path):
    """What portcullis itself needs: probes, a pause before SIGTERM, a grace period longer than
    the gateway's own drain, and a checksum annotation that matches the configuration."""
    name = f"container {c.get('name')}"
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
        if got != want:
            fail(where, f"{name}: {probe} must be httpGet {want}, got {got!r}")
    pre_stop = ((c.get("lifecycle") or {}).get("preStop")) or {}
    sleep = (pre_stop.get("sleep") or {}).get("seconds", 0)
    if "exec" in pre_stop:
        fail(where, f"{name}: preStop exec needs a shell or sleep binary; the image is distroless")
    # The configuration: the ConfigMap volume mounted where --config points.
    config_name = None
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            config_name = v["configMap"].get("name")
    text = configmaps.get(config_name)
    if text is None:
        fail(where, f"{name}: no ConfigMap {config_name!r} with gateway.toml in {path}")
        return
    config = tomllib.loads(text)
    server = config.get("server", {})
    grace = duration_seconds(server.get("grace_period", "30s"))
    delay = duration_seconds(server.get("shutdown_delay", "0s"))
    if sleep == 0 and delay == 0:
        fail(where, f"{name}: neither a preStop sleep nor server.shutdown_delay: endpoints may "
                    f"still send traffic after SIGTERM")
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if not tgps > sleep + delay + grace:
        fail(where, f"terminationGracePeriodSeconds {tgps} must exceed preStop {sleep}s + "
                    f"shutdown_delay {delay}s + grace_period {grace}s")
    want = hashlib.sha256(text.encode("utf-8")).hexdigest()
    got = (meta.get("annotations") or {}).get(CHECKSUM_ANNOTATION)
    if got != want:
        fail(where, f"pod annotation {CHECKSUM_ANNOTATION} is {got!r}, gateway.toml's sha256 is "
                    f"{want} (update the overlay's annotation)")


def restricted(paths):
    checked = 0
    for path in paths:
        docs = load(path)
        configmaps = {
            (d.get("metadata") or {}).get("name"): (d.get("data") or {}).get("gateway.toml")
            for d in docs if d.get("kind") == "ConfigMap"
        }
        for doc in docs:
            if doc.get("kind") not in POD_KINDS:
                continue
            checked += 1
            where = f"{path} {name_of(doc)}"
            before = failures
            meta, spec = pod_template(doc)
            pod_sc = spec.get("securityContext") or {}
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                if spec.get(key):
                    fail(where, f"{key} is set")
            if spec.get("automountServiceAccountToken") is not False:
                fail(where, "automountServiceAccountToken must be false")
            if pod_sc.get("runAsNonRoot") is not True:
                fail(where, "pod securityContext.runAsNonRoot must be true")
            for v in spec.get("volumes") or []:
                kinds = set(v) - {"name"}
                if not kinds <= RESTRICTED_VOLUMES:
                    fail(where, f"volume {v.get('name')}: {sorted(kinds)} not allowed by restricted")
            containers = [
                *(spec.get("initContainers") or []),
                *(spec.get("containers") or []),
                *(spec.get("ephemeralContainers") or []),
            ]
            if not containers:
                fail(where, "no containers")
            for c in containers:
                check_container(where, c, pod_sc)
                if "portcullis" in str(c.get("image", "")):
                    check_gateway(where, meta, spec, c, configmaps, path)
            if failures == before:
                names = ", ".join(c.get("name", "?") for c in containers)
                print(f"ok   {where}: restricted profile ({names})")
    if checked == 0:
        fail(" ".join(paths), "no pod template found: nothing was checked")


def main(argv):
    if len(argv) >= 2 and argv[1] == "schemas" and "--" in argv:
        split = argv.index("--")
        versions, paths = argv[2:split], argv[split + 1:]
        if not versions or not paths:
            raise SystemExit("usage: check_deploy.py schemas VERSION... -- FILE...")
        schemas(versions, paths)
    elif len(argv) >= 3 and argv[1] == "restricted":
        restricted(argv[2:])
    elif len(argv) == 3 and argv[1] == "same":
        fresh = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
        committed = load(argv[2])
        if fresh != committed:
            fail(argv[2], "differs from what kustomize renders now")
        else:
            print(f"ok   {argv[2]}: the same {len(fresh)} objects as kustomize renders")
    else:
        raise SystemExit(__doc__)
    print(f"{failures} finding(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
