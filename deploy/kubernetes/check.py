#!/usr/bin/env python3
"""Checks rendered overlays (files given as arguments, from `kubectl kustomize`):

1. every built-in object validates, strictly (no unknown field), against the Kubernetes
   JSON schemas of a current release (kubernetes-validate); custom resources are
   validate/validate.mjs's;
2. the Kubernetes objects and the Compose stack don't drift: each workload runs the
   Compose service's image, with the same FLOWFORGE_* variable names and the same secret
   file names under /run/secrets, and the PrometheusRules hold exactly the rules of
   deploy/images/prometheus/rules; the Gateway sets the proxy's security headers.

Prints one line per failure and a summary; exits non-zero on any failure.
"""
import pathlib
import re
import sys

import kubernetes_validate
import yaml

KUBERNETES = "1.37.0"
ROOT = pathlib.Path(__file__).resolve().parents[2]
# Kubernetes workload → Compose service.
WORKLOADS = {"api": "api", "worker": "worker", "web": "web", "migrate": "migrate", "redis": "redis"}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def built_in(api_version):
    group = api_version.rpartition("/")[0]
    return "." not in group or (group.endswith(".k8s.io") and not group.startswith("gateway."))


def compose_services():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    out = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        secrets = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
        image = re.sub(r":.*", "", service.get("image", ""))
        out[name] = {"env": {n for n in names if n.startswith("FLOWFORGE_")}, "secrets": set(secrets), "image": image}
    return out


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def workload_view(obj):
    spec = pod_spec(obj)
    container = spec["containers"][0]
    env = {e["name"] for e in container.get("env", []) if e["name"].startswith("FLOWFORGE_")}
    secret_volumes = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/run/secrets"}
    files = set()
    for volume in spec.get("volumes", []):
        if volume["name"] in secret_volumes:
            for source in volume.get("projected", {}).get("sources", []):
                files |= {item["path"] for item in source.get("secret", {}).get("items", [])}
    image = container["image"].rpartition("/")[2]
    image = re.sub(r"[:@].*", "", image)
    return {"env": env, "secrets": files, "image": image}


def rules_from_files():
    groups = []
    for path in sorted((ROOT / "deploy/images/prometheus/rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def check_overlay(path):
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    checked = 0
    for obj in objects:
        if not built_in(obj["apiVersion"]):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
            checked += 1
        except Exception as e:  # noqa: BLE001 - every kind of refusal is a failure here
            fail(f"{path.name}: {obj['kind']} {obj['metadata'].get('name')}: {str(e).splitlines()[0]}")
    compose = compose_services()
    workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job")}
    for name, service in WORKLOADS.items():
        if name not in workloads:
            fail(f"{path.name}: no workload {name}")
            continue
        k8s, dc = workload_view(workloads[name]), compose[service]
        for what in ("image", "env", "secrets"):
            if k8s[what] != dc[what]:
                if isinstance(k8s[what], set):
                    diff = f"only here {sorted(k8s[what] - dc[what])}, only in Compose {sorted(dc[what] - k8s[what])}"
                else:
                    diff = f"{k8s[what]} here, {dc[what]} in Compose"
                fail(f"{path.name}: {name}'s {what} differs from compose.yaml's {service}: {diff}")
    deployed = []
    for obj in objects:
        if obj["kind"] == "PrometheusRule":
            deployed += obj["spec"]["groups"]
    if deployed != rules_from_files():
        fail(f"{path.name}: the PrometheusRules differ from deploy/images/prometheus/rules")
    proxy = (ROOT / "deploy/images/proxy/haproxy.cfg").read_text()
    wanted = dict(re.findall(r'http-after-response set-header (\S+) "?([^"\n]+)"?', proxy))
    wanted.pop("X-Request-Id", None)  # per request, the proxy's own
    for route in (o for o in objects if o["kind"] == "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            headers = {
                h["name"]: h["value"]
                for f in rule.get("filters", [])
                if f["type"] == "ResponseHeaderModifier"
                for h in f["responseHeaderModifier"].get("set", [])
            }
            if headers != wanted:
                fail(f"{path.name}: HTTPRoute {route['metadata']['name']} sets {headers}, the proxy {wanted}")
    print(f"{path.name}: {checked} built-in objects valid against Kubernetes {KUBERNETES}; compared with compose.yaml")


def main():
    for arg in sys.argv[1:]:
        check_overlay(pathlib.Path(arg))
    print(f"kubernetes checks: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
