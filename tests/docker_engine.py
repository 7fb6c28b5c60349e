"""Docker for the ``docker``-marked tests: the engine check, the service image built once, and
small wrappers over the CLI. Without a Docker engine those tests are skipped, unless
REQUIRE_DOCKER=1 (CI), where they fail instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools import standin_images

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_DOCKER = os.environ.get("REQUIRE_DOCKER") == "1"
#: The build secret's id in the Dockerfile (RUN --mount=type=secret,id=pip-ca).
CA_SECRET = "pip-ca"


def missing_docker() -> str | None:
    """Why the docker tests cannot run here, or None."""
    if shutil.which("docker") is None and not Path("/usr/bin/docker").exists():
        return "no docker CLI (apt-get install -y docker.io)"
    engine = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if engine.returncode != 0:
        return f"no Docker engine answers (start dockerd): {engine.stderr.strip()[:200]}"
    if standin_images.buildkit_docker() is None:
        return "no docker CLI that builds with BuildKit (buildx, or Debian's docker.io)"
    return None


def require_docker() -> str:
    """The BuildKit-capable docker CLI; skip (fail where CI requires it) without an engine."""
    problem = missing_docker()
    if problem is not None:
        if REQUIRE_DOCKER:
            pytest.fail(f"{problem} (REQUIRE_DOCKER=1)")
        pytest.skip(problem)
    cli = standin_images.buildkit_docker()
    assert cli is not None
    return cli


def docker(cli: str, *args: str, timeout_s: float = 600, check: bool = True) -> str:
    """Run ``docker args``; its stdout (fail with its output when ``check`` and it fails)."""
    result = subprocess.run(
        [cli, *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}\n{result.stderr[-3000:]}"
    return result.stdout


def inspect(cli: str, name: str) -> dict[str, Any]:
    """``docker inspect`` of one container or image."""
    (found,) = json.loads(docker(cli, "inspect", name))
    result: dict[str, Any] = found
    return result


def secret_args() -> list[str]:
    """``--secret`` handing the proxy's CA bundle (PIP_CERT) to the build, when there is one."""
    bundle = os.environ.get("PIP_CERT")
    return ["--secret", f"id={CA_SECRET},src={bundle}"] if bundle and Path(bundle).is_file() else []


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    build_s: float
    size_bytes: int
    #: Building (or finding) the stand-in base images first.
    standins_s: float


def build_service_image(cli: str, tag: str) -> BuiltImage:
    """The Dockerfile built with the Debian stand-in for python:3.11-slim as PYTHON_IMAGE."""
    # Every stand-in the docker tests use, built side by side once (then cached by tag).
    started = time.monotonic()
    base = standin_images.build_all(["python", "busybox", "kafka", "prometheus"])["python"]
    standins_s = time.monotonic() - started
    started = time.monotonic()
    _build(cli, tag, base)
    build_s = time.monotonic() - started
    size = int(inspect(cli, tag)["Size"])
    return BuiltImage(tag, base, build_s, size, standins_s)


def _build(cli: str, tag: str, base: str) -> None:
    command = [
        "nice", "-n", "10", cli, "build", *secret_args(),
        "--build-arg", f"PYTHON_IMAGE={base}", "--tag", tag, str(ROOT),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"


#: Where the tested command lines are written: the README, then the documentation pages.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_block(marker: str) -> list[str]:
    """The command lines (continuations joined) of the first ``sh`` block after ``marker``
    in the first document that has it."""
    (text,) = [page.read_text("utf-8") for page in DOCUMENTS if marker in page.read_text("utf-8")][
        :1
    ]
    start = text.index(marker)
    opening = text.index("```sh\n", start) + len("```sh\n")
    body = text[opening : text.index("\n```", opening)]
    lines: list[str] = []
    pending = ""
    for line in body.splitlines():
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending:
            lines.append(pending)
        pending = ""
    return lines


class Shell:
    """README lines run one at a time by bash, as a reader's shell would: in the repository,
    with the variables earlier ``export`` lines set."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, line: str, *, timeout_s: float = 900, check: bool = True) -> str:
        """Run ``line``; its stdout (fail with its output when ``check`` and it fails)."""
        with tempfile.TemporaryDirectory(prefix="readme-shell-") as scratch:
            exported = Path(scratch) / "env"
            # After an export line, the shell's environment is kept for the next lines.
            keep = f'\nenv -0 > "{exported}"' if line.startswith("export ") else ""
            result = subprocess.run(
                ["bash", "-c", line + keep],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            if exported.exists():
                pairs = (item.split("=", 1) for item in exported.read_text().split("\0"))
                self.env = dict(pair for pair in pairs if len(pair) == 2)
        if check:
            output = result.stdout[-2000:] + result.stderr[-3000:]
            assert result.returncode == 0, f"{line}\n{output}"
        return result.stdout
