"""The Kubernetes kit: kustomize builds, valid resources, and settings in step with the CLI.

Offline: ``kubectl kustomize`` builds the base and the example overlay (which adds the
suggest-api and kafka-auth components); the Kubernetes kinds
are validated (strict: unknown fields fail) against the schemas kubernetes-validate ships,
the KEDA and Prometheus Operator kinds against their CRD schemas with Node.js
(tools/validate-crds.mjs, packages pinned in tools/package-lock.json). Without kubectl or
Node those tests are skipped, unless REQUIRE_OPS_TOOLS=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from conftest import serve_settings

from ops.kubernetes import dashboard, rules
from service.config.commands import ServeSettings, env_name

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "ops" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "example"
TOOLS = ROOT / "tools"
COMPOSE = ROOT / "docker-compose.yml"
MODEL_DOCKERFILE = ROOT / "ops" / "model-image" / "Dockerfile"
RUNBOOK = ROOT / "ops" / "README.md"
#: The oldest Kubernetes minor release the manifests must be valid for.
KUBERNETES_VERSION = "1.29"
CUSTOM_KINDS = frozenset(
    {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
)
#: The kafka scaler's TriggerAuthentication parameters for SASL and TLS (KEDA docs,
#: scalers/apache-kafka, "Authentication Parameters").
KEDA_KAFKA_AUTH = frozenset(
    {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
)
#: The service's --sasl-mechanism and the kafka scaler's `sasl` for the same thing.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
REQUIRED = os.environ.get("REQUIRE_OPS_TOOLS") == "1"


def _need(program: str, hint: str) -> str:
    found = shutil.which(program)
    if found is None:
        if REQUIRED:
            pytest.fail(f"{program} not installed ({hint})")
        pytest.skip(f"{program} not installed ({hint})")
    return found


def _build(directory: Path) -> list[dict[str, Any]]:
    kubectl = _need("kubectl", "kubectl kustomize builds the manifests")
    built = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _only(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


def _named(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def _secret_env(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The variables read from Secrets: name -> (secret, key)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {
        item["name"]: (ref["name"], ref["key"])
        for item in container["env"]
        if (ref := item.get("valueFrom", {}).get("secretKeyRef"))
    }


def _serve_environment() -> set[str]:
    return {env_name(name) for name in ServeSettings.model_fields}


@pytest.fixture(scope="module", params=[BASE, OVERLAY], ids=["base", "example-overlay"])
def built(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    directory: Path = request.param
    return _build(directory)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _build(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return _build(OVERLAY)


def test_prometheus_rule_is_generated_from_the_alert_file() -> None:
    """base/prometheusrule.yaml is exactly what ops/kubernetes/rules.py makes of alerts.yml
    (run `make ops-files` after editing the alerts)."""
    assert rules.RULE_PATH.read_text("utf-8") == rules.render()
    groups = yaml.safe_load(rules.ALERTS.read_text("utf-8"))["groups"]
    assert rules.build()["spec"]["groups"] == groups


def test_kubernetes_kinds_are_valid_for_the_api(built: list[dict[str, Any]]) -> None:
    """Every built Kubernetes resource validates strictly (no unknown field) against the
    API schemas of the oldest supported release."""
    kinds = {r["kind"] for r in built}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert kinds <= {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} | CUSTOM_KINDS
    for resource in built:
        if resource["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_custom_resources_are_valid_for_their_crds(built: list[dict[str, Any]]) -> None:
    """The ScaledObject, TriggerAuthentication, ServiceMonitor and PrometheusRule validate
    against the KEDA and Prometheus Operator CRD schemas."""
    node = _need("node", "Node.js 18+ with `npm ci --prefix tools`")
    if not (TOOLS / "node_modules").is_dir():
        if REQUIRED:
            pytest.fail("tools/node_modules missing: npm ci --prefix tools")
        pytest.skip("tools/node_modules missing: npm ci --prefix tools")
    custom = [r for r in built if r["kind"] in CUSTOM_KINDS]
    checked = subprocess.run(
        [node, str(TOOLS / "validate-crds.mjs")],
        input=json.dumps(custom),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": valid") == len(custom) >= 3


def test_the_crd_check_refuses_a_broken_resource() -> None:
    """The CRD validator is not a rubber stamp: a ScaledObject whose maxReplicaCount is
    not an integer and whose trigger has no type is refused."""
    node = _need("node", "Node.js 18+ with `npm ci --prefix tools`")
    if not (TOOLS / "node_modules").is_dir():
        pytest.skip("tools/node_modules missing: npm ci --prefix tools")
    scaled = yaml.safe_load((BASE / "scaledobject.yaml").read_text())
    scaled["spec"]["maxReplicaCount"] = "six"
    del scaled["spec"]["triggers"][0]["type"]
    checked = subprocess.run(
        [node, str(TOOLS / "validate-crds.mjs")],
        input=json.dumps([scaled]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 1, checked.stdout
    assert "maxReplicaCount" in checked.stdout


def test_every_environment_variable_is_a_serve_option(built: list[dict[str, Any]]) -> None:
    """Each ARTICLE_CLASSIFIER_* variable the Deployment sets feeds an option `serve` knows,
    and the values given as literals are accepted by the service's settings."""
    env = _env(_only(built, "Deployment"))
    known = _serve_environment()
    ours = {name for name in env if name.startswith("ARTICLE_CLASSIFIER_")}
    assert ours, "no service settings in the Deployment"
    assert sorted(ours - known) == [], f"unknown to `serve`: {sorted(ours - known)}"
    assert set(env) == ours, f"variables the service does not read: {set(env) - ours}"
    # The values the manifests give, read the way the container's `serve` reads them; a
    # value from a Secret stands in as a placeholder.
    literal = {name: value for name, value in env.items() if value}
    literal |= dict.fromkeys(_secret_env(_only(built, "Deployment")), "from-a-secret")
    settings = serve_settings(env=literal)
    assert str(settings.model) == env["ARTICLE_CLASSIFIER_MODEL"]
    assert settings.input_topic == env["ARTICLE_CLASSIFIER_INPUT_TOPIC"]


def test_scaling_is_capped_at_the_partition_count(built: list[dict[str, Any]]) -> None:
    """KEDA watches the group and topic the Deployment consumes, on the same brokers, and
    never runs more replicas than the input topic has partitions (compose creates them)."""
    env = _env(_only(built, "Deployment"))
    scaled = _only(built, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == env["ARTICLE_CLASSIFIER_INPUT_TOPIC"]
    assert meta["consumerGroup"] == env["ARTICLE_CLASSIFIER_GROUP_ID"]
    assert meta["bootstrapServers"] == env["ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS"]
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    compose = COMPOSE.read_text()
    topic = re.escape(env["ARTICLE_CLASSIFIER_INPUT_TOPIC"])
    partitions = re.search(rf"--topic {topic} --partitions (\d+)", compose)
    assert partitions, "docker-compose.yml does not create the input topic"
    annotation = scaled["metadata"]["annotations"]["article-classifier/input-partitions"]
    assert scaled["spec"]["maxReplicaCount"] == int(annotation) == int(partitions[1])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        _only(built, "Deployment")["metadata"]["name"],
    )


def test_pods_are_probed_bounded_and_locked_down(built: list[dict[str, Any]]) -> None:
    """Liveness on /healthz, readiness on /readyz, memory bounded, non-root with a read-only
    root file system, a grace period above the drain bound, spread over zones and nodes."""
    deployment = _only(built, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    env = _env(deployment)
    drain_s = float(env.get("ARTICLE_CLASSIFIER_SHUTDOWN_TIMEOUT_S") or 30.0)
    assert pod["terminationGracePeriodSeconds"] > drain_s + 5
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    assert env["ARTICLE_CLASSIFIER_MODEL"].startswith(mounts["models"]["mountPath"] + "/")
    assert mounts["tmp"]["mountPath"] == "/tmp"
    for init in pod["initContainers"]:
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert init["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert init["resources"]["limits"]["memory"]


def _dockerfile_json(instruction: str) -> list[str]:
    (line,) = [
        line for line in MODEL_DOCKERFILE.read_text().splitlines() if line.startswith(instruction)
    ]
    value: list[str] = json.loads(line.split(None, 1)[1])
    return value


def test_the_model_comes_from_the_model_image(built: list[dict[str, Any]]) -> None:
    """An init container runs the model image's copy step into an emptyDir, the service
    mounts that read-only and serves the copy; no claim waits for someone to fill it."""
    assert "PersistentVolumeClaim" not in {r["kind"] for r in built}
    deployment = _only(built, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["image"].split("/")[-1].startswith("article-classifier-model:")
    # The image's own ENTRYPOINT copies /model/. into the first argument.
    assert _dockerfile_json("ENTRYPOINT")[-2:] == ["-R", "/model/."]
    (target,) = init.get("args", _dockerfile_json("CMD"))
    assert "command" not in init
    volumes = {v["name"]: v for v in pod["volumes"]}
    (init_mount,) = init["volumeMounts"]
    assert "emptyDir" in volumes[init_mount["name"]]
    assert not init_mount.get("readOnly", False)
    served = {m["name"]: m for m in container["volumeMounts"]}[init_mount["name"]]
    assert served["readOnly"] is True
    relative = Path(target).relative_to(init_mount["mountPath"])
    assert _env(deployment)["ARTICLE_CLASSIFIER_MODEL"] == f"{served['mountPath']}/{relative}"


def test_keda_owns_the_replica_count(built: list[dict[str, Any]]) -> None:
    """The Deployment KEDA scales sets no `replicas` that every apply would reset."""
    deployment = _only(built, "Deployment")
    assert (
        _only(built, "ScaledObject")["spec"]["scaleTargetRef"]["name"]
        == (deployment["metadata"]["name"])
    )
    assert "replicas" not in deployment["spec"]


def test_drains_evict_unhealthy_pods(built: list[dict[str, Any]]) -> None:
    """The PodDisruptionBudget lets a drain evict a pod that is not ready."""
    budget = _only(built, "PodDisruptionBudget")
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_prometheus_operator_resources_carry_the_release_label(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    """The ServiceMonitor and the PrometheusRule carry the `release` label
    kube-prometheus-stack selects by, one value per build set in one place, and nothing
    else carries it."""
    for built, directory in ((base, BASE), (overlay, OVERLAY)):
        wanted = yaml.safe_load((directory / "prometheus-release.yaml").read_text())
        release = wanted["labels"]["release"]
        for kind in ("ServiceMonitor", "PrometheusRule"):
            assert _only(built, kind)["metadata"]["labels"]["release"] == release, kind
        others = [r["kind"] for r in built if "release" in r["metadata"].get("labels", {})]
        assert sorted(others) == ["PrometheusRule", "ServiceMonitor"]
    assert (
        _only(base, "ServiceMonitor")["metadata"]["labels"]["release"]
        != _only(overlay, "ServiceMonitor")["metadata"]["labels"]["release"]
    )


def test_runbook_urls_are_absolute_links_to_a_runbook_section(
    built: list[dict[str, Any]],
) -> None:
    """Every alert links an absolute https URL whose fragment is a section of
    ops/README.md, so Alertmanager and Grafana can link it from anywhere."""
    anchors = {
        line[4:].strip().lower()
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("### ")
    }
    alerts = [
        rule
        for group in _only(built, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert alerts
    for rule in alerts:
        url = urlparse(rule["annotations"]["runbook_url"])
        assert (url.scheme, bool(url.netloc)) == ("https", True), rule["alert"]
        assert url.path.endswith("/ops/README.md"), rule["alert"]
        assert url.fragment == rule["alert"].lower(), rule["alert"]
        assert url.fragment in anchors, rule["alert"]


def test_keda_authenticates_to_kafka_as_the_service_does(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    """Where the brokers need SASL over TLS (the kafka-auth component of the example
    overlay), KEDA's trigger uses a TriggerAuthentication reading the same Secret keys as
    the service, with the matching SASL mechanism and TLS; the base has neither."""
    (plain,) = _only(base, "ScaledObject")["spec"]["triggers"]
    assert "authenticationRef" not in plain
    assert "ARTICLE_CLASSIFIER_SECURITY_PROTOCOL" not in _env(_only(base, "Deployment"))
    deployment = _only(overlay, "Deployment")
    env, secrets = _env(deployment), _secret_env(deployment)
    (trigger,) = _only(overlay, "ScaledObject")["spec"]["triggers"]
    auth = _named(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    refs = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) <= KEDA_KAFKA_AUTH
    assert refs["username"] == secrets["ARTICLE_CLASSIFIER_SASL_PLAIN_USERNAME"]
    assert refs["password"] == secrets["ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD"]
    assert trigger["metadata"]["sasl"] == KEDA_SASL[env["ARTICLE_CLASSIFIER_SASL_MECHANISM"]]
    uses_tls = env["ARTICLE_CLASSIFIER_SECURITY_PROTOCOL"] in {"SSL", "SASL_SSL"}
    assert trigger["metadata"]["tls"] == ("enable" if uses_tls else "disable")
    # The CA the scaler trusts is the file the service reads: the same key of the Secret.
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cafile = Path(env["ARTICLE_CLASSIFIER_SSL_CAFILE"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(cafile.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == cafile.name]
    assert refs["ca"] == (volume["secret"]["secretName"], item["key"])


def test_the_suggest_api_is_reachable_when_enabled(
    base: list[dict[str, Any]], overlay: list[dict[str, Any]]
) -> None:
    """With the suggest-api component the API listens on all interfaces of the pod on a
    named port, a Service of its own reaches it, and the ServiceMonitor does not select
    that Service; without it the API is off."""
    assert "ARTICLE_CLASSIFIER_API_PORT" not in _env(_only(base, "Deployment"))
    deployment = _only(overlay, "Deployment")
    env = _env(deployment)
    assert env["ARTICLE_CLASSIFIER_API_HOST"] == "0.0.0.0"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    exposed = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _named(overlay, "Service", "article-classifier-api")
    (port,) = service["spec"]["ports"]
    assert exposed[port["targetPort"]] == int(env["ARTICLE_CLASSIFIER_API_PORT"])
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = _only(overlay, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert not monitor.items() <= service["metadata"]["labels"].items()
    # Compose publishes the same port on the host's loopback.
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["classifier"]
    assert (
        compose["environment"]["ARTICLE_CLASSIFIER_API_PORT"] == env["ARTICLE_CLASSIFIER_API_PORT"]
    )
    assert f"127.0.0.1:{port['port']}:{env['ARTICLE_CLASSIFIER_API_PORT']}" in compose["ports"]


def test_the_grafana_dashboard_ships_for_the_sidecar(built: list[dict[str, Any]]) -> None:
    """The dashboard is a ConfigMap labelled for Grafana's sidecar, holding exactly
    ops/grafana's JSON (`make ops-files` regenerates it)."""
    assert dashboard.CONFIGMAP_PATH.read_text("utf-8") == dashboard.render()
    configmap = _named(built, "ConfigMap", "article-classifier-dashboard")
    label, value = dashboard.SIDECAR_LABEL
    assert configmap["metadata"]["labels"][label] == value
    (text,) = configmap["data"].values()
    assert json.loads(text) == json.loads(dashboard.DASHBOARD.read_text("utf-8"))


def test_selectors_find_the_pods(built: list[dict[str, Any]]) -> None:
    """The metrics Service, the PodDisruptionBudget and the ServiceMonitor select what they
    should, on the port the container exposes."""
    deployment = _only(built, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _named(built, "Service", "article-classifier-metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    budget = _only(built, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = _only(built, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (port,) = service["spec"]["ports"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    exposed = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert exposed[port["targetPort"]] == int(_env(deployment)["ARTICLE_CLASSIFIER_METRICS_PORT"])
    # The alert rules select job="article-classifier": the ServiceMonitor's job label.
    assert pod_labels[monitor["spec"]["jobLabel"]] == "article-classifier"
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "article-classifier"
