"""The desk's optional Kubernetes component: built with the base, valid, its settings in
step with the `desk` command, and kept apart from the service's pods."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
from conftest import only_environment
from test_ops_kubernetes import KUBERNETES, KUBERNETES_VERSION, _build, _env, _named

from service.config.commands import DeskSettings, env_name


def _with_desk(tmp_path: Path) -> list[dict[str, Any]]:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(KUBERNETES / "base", overlay)
    desk = os.path.relpath(KUBERNETES / "components" / "desk", overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {base}\ncomponents:\n  - {desk}\n"
    )
    return _build(overlay)


def test_the_desk_component_builds_valid_and_apart(tmp_path: Path) -> None:
    """The desk's Deployment and Service validate strictly; its variables are settings of
    `desk` that it accepts; its Service selects its pods and the service's Service and
    PodDisruptionBudget do not; it is probed, bounded and locked down."""
    built = _with_desk(tmp_path)
    deployment = _named(built, "Deployment", "article-classifier-desk")
    service = _named(built, "Service", "article-classifier-desk")
    for resource in (deployment, service):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    env = _env(deployment)
    known = {env_name(name) for name in DeskSettings.model_fields}
    assert set(env) <= known, sorted(set(env) - known)
    tokens = Path(env["ARTICLE_CLASSIFIER_API_TOKENS_FILE"])
    assert tokens == Path("/etc/article-classifier/desk/tokens")
    # Read as the container reads them, the tokens file standing in for the Secret's.
    stand_in = tmp_path / "tokens"
    stand_in.write_text("alice:a-token-of-the-secret-0123\n")
    literal = {k: v for k, v in env.items() if v}
    literal["ARTICLE_CLASSIFIER_API_TOKENS_FILE"] = str(stand_in)
    with only_environment(literal):
        settings = DeskSettings()
    assert settings.desk_port == 8090
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    for other in (
        _named(built, "Service", "article-classifier-metrics")["spec"]["selector"],
        next(r for r in built if r["kind"] == "PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
    ):
        assert not other.items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["article-classifier", "desk"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["desk"] == settings.desk_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(tokens.parent) in mounts


def test_on_a_secured_cluster_the_desk_connects_as_the_service_does(tmp_path: Path) -> None:
    """With the desk listed before kafka-auth, the desk's pod gets the service's security
    variables, the same Secret keys for the credentials, and the CA file mounted."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    relative = {
        name: os.path.relpath(KUBERNETES / path, overlay)
        for name, path in {
            "base": "base",
            "desk": "components/desk",
            "auth": "components/kafka-auth",
        }.items()
    }
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative['base']}\n"
        f"components:\n  - {relative['desk']}\n  - {relative['auth']}\n"
    )
    built = _build(overlay)
    service = _named(built, "Deployment", "article-classifier")
    desk = _named(built, "Deployment", "article-classifier-desk")
    kubernetes_validate.validate(desk, KUBERNETES_VERSION, strict=True)
    names = (
        "ARTICLE_CLASSIFIER_SECURITY_PROTOCOL",
        "ARTICLE_CLASSIFIER_SASL_MECHANISM",
        "ARTICLE_CLASSIFIER_SASL_PLAIN_USERNAME",
        "ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD",
        "ARTICLE_CLASSIFIER_SSL_CAFILE",
    )

    def security(deployment: dict[str, Any]) -> dict[str, Any]:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e for e in container["env"] if e["name"] in names}

    assert security(desk) == security(service)
    assert set(security(desk)) == set(names)
    (container,) = desk["spec"]["template"]["spec"]["containers"]
    cafile = Path(security(desk)["ARTICLE_CLASSIFIER_SSL_CAFILE"]["value"])
    assert str(cafile.parent) in {m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in desk["spec"]["template"]["spec"]["volumes"]}
    assert "kafka-credentials" in volumes
