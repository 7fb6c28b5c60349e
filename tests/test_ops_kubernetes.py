"""The Kubernetes kit: kustomize builds, valid resources, and settings in step with the CLI.

Offline: ``kubectl kustomize`` builds the base and the example overlay; the Kubernetes kinds
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

import kubernetes_validate
import pytest
import yaml
from conftest import serve_settings

from ops.kubernetes import rules
from service.config.commands import ServeSettings, env_name

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "ops" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "example"
TOOLS = ROOT / "tools"
COMPOSE = ROOT / "docker-compose.yml"
#: The oldest Kubernetes minor release the manifests must be valid for.
KUBERNETES_VERSION = "1.29"
CUSTOM_KINDS = frozenset({"ScaledObject", "ServiceMonitor", "PrometheusRule"})
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


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}


def _serve_environment() -> set[str]:
    return {env_name(name) for name in ServeSettings.model_fields}


@pytest.fixture(scope="module", params=[BASE, OVERLAY], ids=["base", "example-overlay"])
def built(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    directory: Path = request.param
    return _build(directory)


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
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim"} | (
        CUSTOM_KINDS
    )
    for resource in built:
        if resource["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_custom_resources_are_valid_for_their_crds(built: list[dict[str, Any]]) -> None:
    """The ScaledObject, ServiceMonitor and PrometheusRule validate against the KEDA and
    Prometheus Operator CRD schemas."""
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
    assert checked.stdout.count(": valid") == len(CUSTOM_KINDS)


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
    # The values the manifests give, read the way the container's `serve` reads them.
    literal = {name: value for name, value in env.items() if value}
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
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    assert claim["claimName"] == _only(built, "PersistentVolumeClaim")["metadata"]["name"]
    assert mounts["tmp"]["mountPath"] == "/tmp"


def test_selectors_find_the_pods(built: list[dict[str, Any]]) -> None:
    """The metrics Service, the PodDisruptionBudget and the ServiceMonitor select what they
    should, on the port the container exposes."""
    deployment = _only(built, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _only(built, "Service")
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
