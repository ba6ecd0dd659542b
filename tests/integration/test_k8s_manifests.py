"""deploy/k8s rendered as it would be applied, and checked offline (no cluster).

Each overlay (staging, production) is rendered with `kubectl kustomize`. Every built-in kind
is validated strictly (no unknown field) against the schema of a pinned Kubernetes version
(kubernetes-validate); the Argo Rollouts kinds against their CRD's openAPIV3Schema vendored in
deploy/k8s/schemas/, made strict the same way. Then what the schemas cannot say:

- every Settings field is wired (ConfigMap, Secret, or declared unset with a reason), secrets
  only in the Secret, and each Deployment's environment makes valid Settings;
- each Deployment mounts the contexts the fleet gives it, runs the duties it should, and finds
  inventory's gRPC Service where INSTOCK_INVENTORY_URL says;
- every container runs as the image's non-root user on a read-only root, with requests,
  limits and probes, writable dirs on emptyDirs, graceful shutdown behind its Service;
- every Deployment has an HPA (CPU and a custom metric the prometheus-adapter serves from
  series the app exports) and a PDB; every port is behind a Service;
- every REST path of the app reaches, through the Ingress rules (ingress-nginx's regex path
  matching), a Deployment that mounts the context owning it;
- the inventory canary: Rollout, AnalysisTemplate and the metrics it reads;
- the Containerfile's basics, and the schema gate the pods start with.
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.routing import iter_route_contexts
from prometheus_client import REGISTRY
from starlette.routing import Mount

from instock.app import create_app
from instock.config import Settings
from instock.workers import WORKER_DUTY_SETTINGS, api_only_env
from tests.support import backends, fresh_database, make_settings, migrated_database

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: the manifests are rendered with "
    "`kubectl kustomize` (apt-get install kubectl, or any kubectl >= 1.27)")

# The oldest Kubernetes the manifests are for: validated against its API, strictly.
KUBERNETES_VERSION = "1.35.0"
OVERLAYS = ("staging", "production")
ARGO_SCHEMAS = {"Rollout": K8S / "schemas" / "rollout-argoproj-v1alpha1.json",
                "AnalysisTemplate": K8S / "schemas" / "analysistemplate-argoproj-v1alpha1.json"}

# The fleet (issue 22): each service's Deployment and the contexts it mounts.
FLEET = {
    "inventory": {"inventory", "catalog", "live", "waitlist", "drops"},
    "orders": {"orders", "payments"},
    "recommendations": {"recommendations", "experiments"},
    "profiles": {"customers", "privacy", "identity", "polls"},
    "notifications": {"notifications", "webhooks", "channels"},
    "storefront": {"web", "graphql", "analytics", "reconciliation"},
}
# The names INSTOCK_SERVICES takes: each context with an api.py (or an api/ package), the
# pages, GraphQL.
CONTEXTS = {p.relative_to(ROOT / "src" / "instock").parts[0]
            for p in (ROOT / "src" / "instock").glob("*/api*")
            if p.name == "api.py" or (p / "__init__.py").exists()} | {"web", "graphql"}
GRPC_SERVICES = {"inventory", "recommendations"}  # the contexts that serve gRPC
# Settings the manifests set that instock.config.Settings gained with services apart (issue
# 22): tolerated as unknown should these manifests land first; checked like any other after.
PENDING_SETTINGS = {"INSTOCK_SERVICES", "INSTOCK_GRPC_PORT", "INSTOCK_INVENTORY_URL"}
# Only in the Secret, never in the ConfigMap: credentials, and URLs that carry them.
SECRET_SETTINGS = {"database_url", "bus_url", "redis_url", "jwt_secret", "jwt_previous_secrets",
                   "pii_master_keys", "payments_api_key", "payments_webhook_secret",
                   "smtp_url", "slack_webhook_url", "sms_url"}
# The one duty an API Deployment keeps (storefront.yaml: its metrics feed the canary analysis).
API_DUTIES = {"storefront": {"run_reconciler"}}
UNSET_ANNOTATION = "instock.dev/unset-settings"


def env_name(field_name: str) -> str:
    return f"INSTOCK_{field_name.upper()}"


@dataclass
class Rendered:
    overlay: str
    docs: list[dict[str, Any]]
    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for doc in self.docs:
            self.by_kind.setdefault(doc["kind"], []).append(doc)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's or Secret's data (stringData, or data decoded), by its name."""
        doc = self.one(kind, name)
        if kind == "Secret" and "data" in doc:
            return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}
        return dict(doc.get("stringData") or doc.get("data") or {})


def render(overlay: str) -> Rendered:
    out = subprocess.run([KUBECTL or "kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return Rendered(overlay, docs)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def workloads(r: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, the object, its pod spec) for every Deployment and Job."""
    for kind in ("Deployment", "Job"):
        for doc in r.kind(kind):
            yield f"{kind}/{doc['metadata']['name']}", doc, doc["spec"]["template"]["spec"]


def main_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "instock"]
    return container


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def effective_env(r: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """What the process sees: its ConfigMaps and Secrets (envFrom), then its own env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(r.data("ConfigMap", source["configMapRef"]["name"]))
        else:
            env.update(r.data("Secret", source["secretRef"]["name"]))
    env.update(literal_env(container))
    return env


def services_of(deployment: dict[str, Any], r: Rendered) -> set[str]:
    value = effective_env(r, main_container(deployment["spec"]["template"]["spec"])).get(
        "INSTOCK_SERVICES", "all")
    return CONTEXTS if value.strip() == "all" else {s.strip() for s in value.split(",")}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pods_of_service(r: Rendered, service: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in r.kind("Deployment")
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]


# --- rendering and schemas ------------------------------------------------------------------

def test_both_overlays_render_the_whole_fleet(rendered: Rendered) -> None:
    deployments = {d["metadata"]["name"] for d in rendered.kind("Deployment")}
    assert deployments == {*FLEET, "workers"}
    assert [j["spec"]["template"]["spec"]["containers"][0]["args"]
            for j in rendered.kind("Job")] == [["migrate"]]
    namespaces = {d["metadata"].get("namespace") for d in rendered.docs
                  if d["kind"] != "Namespace"}
    assert namespaces == {f"instock-{rendered.overlay}"}


def test_builtin_kinds_are_valid_for_the_pinned_kubernetes(rendered: Rendered) -> None:
    builtin = [d for d in rendered.docs if not d["apiVersion"].startswith("argoproj.io/")]
    assert len(builtin) > 30
    problems = []
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: "
                            f"{getattr(e, 'message', e)} at {list(getattr(e, 'path', []))}")
    assert not problems, "\n".join(problems)


def strict(schema: Any) -> Any:
    """An OpenAPI v3 (CRD) schema as the API server's strict field validation reads it: an
    object that lists its properties accepts no others (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def argo_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(ARGO_SCHEMAS[kind].read_text())
    schema = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-group")}
    return jsonschema.Draft202012Validator(strict(schema))


def test_argo_rollouts_kinds_are_valid_for_their_vendored_crd_schema(rendered: Rendered) -> None:
    kinds = {d["kind"] for d in rendered.docs if d["apiVersion"].startswith("argoproj.io/")}
    assert kinds == set(ARGO_SCHEMAS), "a new Argo kind needs its CRD schema vendored"
    for doc in rendered.docs:
        if doc["apiVersion"].startswith("argoproj.io/"):
            assert doc["apiVersion"] == "argoproj.io/v1alpha1"
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in argo_validator(doc["kind"]).iter_errors(doc)]
            assert not errors, f"{doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(errors)
    # The schema is strict: a misspelt field is an error, not silently dropped.
    rollout = copy.deepcopy(rendered.one("Rollout", "inventory"))
    rollout["spec"]["strategy"]["canary"]["stepz"] = []
    assert list(argo_validator("Rollout").iter_errors(rollout))


# --- settings -------------------------------------------------------------------------------

def config_sources(r: Rendered) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(ConfigMap data, Secret data, unset settings with reasons) the instock pods read."""
    containers = [main_container(pod) for _, _, pod in workloads(r)]
    maps = {s["configMapRef"]["name"] for c in containers for s in c["envFrom"]
            if "configMapRef" in s}
    secrets = {s["secretRef"]["name"] for c in containers for s in c["envFrom"]
               if "secretRef" in s}
    assert len(maps) == 1 and len(secrets) == 1, "every pod reads the same settings"
    (config_map,), (secret,) = maps, secrets
    unset = json.loads(r.one("ConfigMap", config_map)["metadata"]["annotations"][UNSET_ANNOTATION])
    return r.data("ConfigMap", config_map), r.data("Secret", secret), unset


def test_every_setting_is_in_the_configmap_or_the_secret(rendered: Rendered) -> None:
    config, secret, unset = config_sources(rendered)
    fields = {env_name(name): info for name, info in Settings.model_fields.items()}
    missing = sorted(set(fields) - set(config) - set(secret) - set(unset))
    assert not missing, f"settings wired nowhere (instock.env, secrets.env or unset): {missing}"
    unknown = sorted((set(config) | set(secret) | set(unset)) - set(fields) - PENDING_SETTINGS)
    assert not unknown, f"not settings of instock.config.Settings (a typo?): {unknown}"
    assert not set(config) & set(secret), "a setting in both the ConfigMap and the Secret"
    for name, reason in unset.items():
        assert name in fields and fields[name].default is None and reason.strip(), (
            f"{name}: only a setting whose default is None may be left unset, with a reason")
    for name in SECRET_SETTINGS:
        assert env_name(name) in secret, f"{env_name(name)} belongs in the Secret"
    leaky = [k for k in config if re.search(r"(SECRET|PASSWORD|_KEYS|API_KEY)$", k)]
    assert not leaky, f"secrets in the ConfigMap: {leaky}"


def test_each_deployment_makes_valid_settings(rendered: Rendered,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, _, pod in workloads(rendered):
        env = effective_env(rendered, main_container(pod))
        for key in list(os.environ):
            if key.startswith("INSTOCK_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()  # raises on any value that is not valid
        assert settings.database_url.startswith("postgresql+asyncpg://"), name
        assert settings.host == "0.0.0.0" and not settings.migrate_on_start, name
        assert settings.jwt_secret and settings.pii_master_keys, (
            f"{name}: without them each pod would make its own keys under its emptyDir")
        unknown = sorted(k for k in literal_env(main_container(pod)) if k.startswith("INSTOCK_")
                         and k.removeprefix("INSTOCK_").lower() not in Settings.model_fields
                         and k not in PENDING_SETTINGS)
        assert not unknown, f"{name}: {unknown} are not settings"


def test_each_deployment_mounts_its_contexts_and_runs_its_duties(rendered: Rendered) -> None:
    api_off = set(api_only_env())
    assert api_off == {env_name(d) for d in WORKER_DUTY_SETTINGS}
    runs: dict[str, set[str]] = {}
    for deployment in rendered.kind("Deployment"):
        name = deployment["metadata"]["name"]
        env = effective_env(rendered, main_container(deployment["spec"]["template"]["spec"]))
        runs[name] = {d for d in WORKER_DUTY_SETTINGS if env[env_name(d)] == "true"}
        if name == "workers":
            assert main_container(deployment["spec"]["template"]["spec"])["args"] == [
                "worker", "all"]
            continue
        assert services_of(deployment, rendered) == FLEET[name], name
        assert services_of(deployment, rendered) <= CONTEXTS
        assert runs[name] == API_DUTIES.get(name, set()), (
            f"{name} is an API process: every INSTOCK_RUN_* duty off (workers.api_only_env)")
    assert runs["workers"] == set(WORKER_DUTY_SETTINGS) - {"run_reconciler"}
    for duty in WORKER_DUTY_SETTINGS:
        where = [name for name, duties in runs.items() if duty in duties]
        assert where, f"no Deployment runs {duty}"
    assert [n for n, d in runs.items() if "run_reconciler" in d] == ["storefront"]


def test_grpc_is_served_where_it_is_called(rendered: Rendered) -> None:
    for deployment in rendered.kind("Deployment"):
        name = deployment["metadata"]["name"]
        container = main_container(deployment["spec"]["template"]["spec"])
        env = effective_env(rendered, container)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        mounted = services_of(deployment, rendered) if name != "workers" else CONTEXTS
        if mounted & GRPC_SERVICES and name != "workers":
            assert int(env["INSTOCK_GRPC_PORT"]) == ports["grpc"] == 50051, name
            service = rendered.one("Service", name)
            assert {"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP",
                    "appProtocol": "grpc"} in service["spec"]["ports"]
        else:
            assert env["INSTOCK_GRPC_PORT"] == "0" and "grpc" not in ports, name
        if "inventory" not in mounted:
            url = re.fullmatch(r"grpc://([a-z0-9-]+):(\d+)", env["INSTOCK_INVENTORY_URL"])
            assert url, f"{name}: INSTOCK_INVENTORY_URL is grpc://<service>:<port>"
            target = rendered.one("Service", url[1])
            assert int(url[2]) in {p["port"] for p in target["spec"]["ports"]
                                   if p["name"] == "grpc"}
            assert all("inventory" in services_of(d, rendered)
                       for d in pods_of_service(rendered, target)), name


# --- pods -----------------------------------------------------------------------------------

def containerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Containerfile").read_text(), re.MULTILINE)
    return int(users[-1].split(":")[0])


def test_every_container_is_unprivileged_and_sized(rendered: Rendered) -> None:
    uid = containerfile_uid()
    for name, _, pod in workloads(rendered):
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] and pod_sc["runAsUser"] == uid, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name} {container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "runAsUser" not in sc or sc["runAsUser"] == uid, where
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert kind in resources["requests"] and kind in resources["limits"], where
            assert quantity(resources["limits"]["memory"]) >= quantity(
                resources["requests"]["memory"]), where
            assert quantity(resources["limits"]["cpu"]) >= quantity(
                resources["requests"]["cpu"]), where


def quantity(text: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    found = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert found, text
    return float(found[1]) * units.get(found[2], 1)


def test_writable_dirs_are_emptydirs(rendered: Rendered) -> None:
    for name, _, pod in workloads(rendered):
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = main_container(pod)
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        state_dir = effective_env(rendered, container)["INSTOCK_STATE_DIR"]
        assert "emptyDir" in mounts[state_dir], f"{name}: INSTOCK_STATE_DIR on an emptyDir"
        assert "emptyDir" in mounts["/tmp"], name
        key_file = Path(effective_env(rendered, container)["INSTOCK_JWT_PRIVATE_KEY_FILE"])
        assert "secret" in mounts[str(key_file.parent)], f"{name}: the signing key is mounted"
        for mount in container["volumeMounts"]:
            if "emptyDir" not in volumes[mount["name"]]:
                assert mount.get("readOnly"), f"{name}: {mount['mountPath']} read-only"


def test_long_running_containers_have_probes_and_shut_down_gracefully(
        rendered: Rendered) -> None:
    for deployment in rendered.kind("Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        container = main_container(pod)
        assert container["startupProbe"] and container["readinessProbe"], name
        assert [c["name"] for c in pod["initContainers"]] == ["wait-for-schema"], name
        # After SIGTERM the process drains, then finishes what is in flight, within its
        # shutdown timeout; all of it (after preStop) must end before the kubelet's SIGKILL.
        env = effective_env(rendered, container)
        stopping = float(env.get("INSTOCK_DRAIN_SECONDS", 0)) + float(
            env.get("INSTOCK_SHUTDOWN_TIMEOUT_SECONDS", 0))
        grace = pod["terminationGracePeriodSeconds"]
        if name == "workers":  # no HTTP: the schema gate is its probe (workers.yaml says why)
            assert container["readinessProbe"]["exec"]["command"][-1] == "check"
            assert "lifecycle" not in container, "nothing routes to a worker: no preStop"
            assert grace >= stopping + 5, name
            continue
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/livez"
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep >= 5 and grace >= sleep + stopping + 5, (
            f"{name}: preStop {sleep} s + stopping {stopping} s do not fit in {grace} s")
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name


def test_every_deployment_has_an_hpa_a_pdb_and_its_service(rendered: Rendered) -> None:
    hpas = {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h
            for h in rendered.kind("HorizontalPodAutoscaler")}
    rollouts = {r["spec"]["workloadRef"]["name"]: r for r in rendered.kind("Rollout")
                if "workloadRef" in r["spec"]}
    for deployment in rendered.kind("Deployment"):
        name = deployment["metadata"]["name"]
        owner = ("Rollout", rollouts[name]["metadata"]["name"]) if name in rollouts else (
            "Deployment", name)
        hpa = hpas.get(owner)
        assert hpa, f"{name}: no HPA scales {owner}"
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu", name
        assert {"Pods", "External"} & set(metrics), f"{name}: a custom metric beside CPU"
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pdbs = [p for p in rendered.kind("PodDisruptionBudget")
                if selects(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(pdbs) == 1, f"{name}: one PodDisruptionBudget"
        ports = {p["name"] for p in main_container(deployment["spec"]["template"]["spec"]).get(
            "ports", [])}
        services = [s for s in rendered.kind("Service")
                    if selects(s["spec"]["selector"], labels)]
        if ports:
            assert len(services) == 1, f"{name}: one Service"
            assert {p["targetPort"] for p in services[0]["spec"]["ports"]} == ports, name
        else:
            assert not services, f"{name} listens nowhere"
    inventory = hpas[("Rollout", "inventory")]
    assert "instock_live_connections" in {m["pods"]["metric"]["name"]
                                          for m in inventory["spec"]["metrics"]
                                          if m["type"] == "Pods"}


def exported_series() -> set[str]:
    """Every series name the app can export: its metrics are registered as their modules are
    imported, and instock.app imports them all."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in REGISTRY.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_hpa_and_canary_metrics_exist(rendered: Rendered) -> None:
    exported = exported_series()
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter.yaml").read_text())
    served = {"Pods": {r["name"]["as"] for r in adapter["rules"]},
              "External": {r["name"]["as"] for r in adapter["externalRules"]}}
    for hpa in rendered.kind("HorizontalPodAutoscaler"):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] in served:
                name = metric[metric["type"].lower()]["metric"]["name"]
                assert name in served[metric["type"]], (
                    f"{hpa['metadata']['name']}: {name} is served by no adapter rule")
    queries = [r["seriesQuery"] + r["metricsQuery"] for r in adapter["rules"]
               + adapter["externalRules"]]
    template = rendered.one("AnalysisTemplate", "inventory-canary")
    queries += [m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]]
    used = {name for q in queries for name in re.findall(r"\binstock_[a-z_]+\b", q)}
    assert used and used <= exported, f"not exported by the app: {sorted(used - exported)}"
    scrape = (K8S / "monitoring" / "prometheus-scrape.yml").read_text()
    for label in ("namespace", "pod", "rollouts_pod_template_hash"):
        assert f"target_label: {label}" in scrape, label


# --- the Ingress ----------------------------------------------------------------------------

def context_of(route: Any) -> str | None:
    """The context that owns a route (None: per process, never routed from outside)."""
    if isinstance(route.original_route, Mount):
        assert route.path == "/static", f"a new mount {route.path}: whose is it?"
        return "web"
    module = route.endpoint.__module__
    if module.startswith(("fastapi.", "instock.app", "instock.platform.telemetry")):
        return None  # /docs, /openapi.json, /livez, /readyz, /metrics: each pod's own
    if module == "instock.web.pages":
        return "web"
    if module.startswith("strawberry.") and route.path == "/graphql":
        return "graphql"
    found = re.fullmatch(r"instock\.([a-z_]+)\.api(?:\.[a-z_]+)?", module)  # api.py or api/
    assert found and found[1] in CONTEXTS, f"{route.path}: whose is {module}?"
    return found[1]


@functools.cache
def app_routes() -> list[tuple[str, str | None]]:
    """(a concrete path of each route, its context), of the app as `instock serve` builds
    it with every service (tests/e2e/test_schemathesis.py's _served_document does the same)."""
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", Path(tempfile.gettempdir())))
    out = []
    for route in iter_route_contexts(app.routes):
        path = re.sub(r"\{[^}]+\}", "p-1", route.path)
        if isinstance(route.original_route, Mount):
            path += "/app.js"
        out.append((path, context_of(route)))
    return out


@dataclass
class IngressPath:
    ingress: str
    regex: str
    service: str
    port: str


def ingress_paths(r: Rendered) -> dict[str, list[IngressPath]]:
    by_host: dict[str, list[IngressPath]] = {}
    for ingress in r.kind("Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        assert annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true"
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["pathType"] == "ImplementationSpecific" and p["path"].startswith("/")
                backend = p["backend"]["service"]
                by_host.setdefault(rule["host"], []).append(IngressPath(
                    ingress["metadata"]["name"], p["path"], backend["name"],
                    backend["port"]["name"]))
    return by_host


def route(paths: list[IngressPath], url: str) -> IngressPath | None:
    """ingress-nginx with use-regex on a host: every path of every Ingress of the host is a
    case-insensitive regex location anchored at the start, tried longest path first, the
    first match wins (kubernetes.github.io/ingress-nginx/user-guide/ingress-path-matching)."""
    matching = [p for p in paths if re.match(p.regex, url, re.IGNORECASE)]
    if not matching:
        return None
    longest = max(len(p.regex) for p in matching)
    tied = {p.service for p in matching if len(p.regex) == longest}
    assert len(tied) == 1, f"{url}: paths of equal length go to {tied}: order undefined"
    return next(p for p in matching if len(p.regex) == longest)


def test_the_ingress_routes_every_rest_path_to_a_deployment_that_mounts_it(
        rendered: Rendered) -> None:
    (paths,) = ingress_paths(rendered).values()  # one host
    used: set[str] = set()
    unrouted, misrouted = [], []
    for url, context in app_routes():
        chosen = route(paths, url)
        if context is None:
            assert chosen is None, f"{url} is each pod's own, yet routed to {chosen}"
            continue
        if chosen is None:
            unrouted.append(f"{url} ({context})")
            continue
        used.add(chosen.regex)
        service = rendered.one("Service", chosen.service)
        assert chosen.port in {p["name"] for p in service["spec"]["ports"]}
        deployments = pods_of_service(rendered, service)
        if not deployments or any(context not in services_of(d, rendered)
                                  for d in deployments):
            misrouted.append(f"{url} ({context}) -> {chosen.service}")
    assert not unrouted, f"no Ingress rule: {unrouted}"
    assert not misrouted, f"routed where its context is not mounted: {misrouted}"
    unused = sorted({p.regex for p in paths} - used)
    assert not unused, f"Ingress paths no route of the app matches: {unused}"


# --- the canary -----------------------------------------------------------------------------

def test_the_inventory_canary(rendered: Rendered) -> None:
    rollout = rendered.one("Rollout", "inventory")
    deployment = rendered.one("Deployment", rollout["spec"]["workloadRef"]["name"])
    assert deployment["spec"]["replicas"] == 0, "the Rollout runs the pods, not the Deployment"
    assert rollout["spec"]["selector"] == deployment["spec"]["selector"]
    canary = rollout["spec"]["strategy"]["canary"]
    weights = [s["setWeight"] for s in canary["steps"] if "setWeight" in s]
    assert weights == sorted(weights) and weights[-1] < 100 and any(
        "pause" in s for s in canary["steps"])
    (ref,) = canary["analysis"]["templates"]
    template = rendered.one("AnalysisTemplate", ref["templateName"])
    given = {a["name"] for a in canary["analysis"]["args"]}
    needed = {a["name"] for a in template["spec"]["args"] if "value" not in a}
    assert needed <= given
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert {"error-rate", "oversold", "stock-drifts", "ledger-verification"} <= set(metrics)
    assert "instock_oversold_units" in metrics["oversold"]["provider"]["prometheus"]["query"]
    assert "{{args.canary-hash}}" in metrics["error-rate"]["provider"]["prometheus"]["query"]


# --- the image ------------------------------------------------------------------------------

def test_containerfile_basics() -> None:
    text = (ROOT / "Containerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages)
    assert re.search(r"pip install --require-hashes -r requirements\.lock", text)
    assert containerfile_uid() != 0
    assert "make proto" in text
    rules = [line for line in (ROOT / ".containerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*", "the context is nothing but what is let in"
    for needed in ("!requirements.lock", "!src/", "!migrations/", "!pyproject.toml"):
        assert needed in rules


# --- the schema gate every pod starts with --------------------------------------------------

def gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "schema_gate", K8S / "base" / "scripts" / "schema_gate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", backends())
def test_schema_gate(backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema_gate = gate()
    with migrated_database(backend, tmp_path) as url:
        assert schema_gate.main(["gate", "check"], {"INSTOCK_DATABASE_URL": url}) == 0
        assert schema_gate.main(["gate", "wait"], {"INSTOCK_DATABASE_URL": url}) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with fresh_database(backend, empty) as url:
        assert schema_gate.main(["gate", "check"], {"INSTOCK_DATABASE_URL": url}) == 1
        assert "this image needs" in capsys.readouterr().err
    placeholder = {"INSTOCK_DATABASE_URL": "postgresql+asyncpg://x:CHANGE-ME@db/instock"}
    assert schema_gate.main(["gate", "secrets"], placeholder) == 1
    assert "INSTOCK_DATABASE_URL" in capsys.readouterr().err
    assert "CHANGE-ME" in (K8S / "base" / "config" / "secrets.env").read_text()
