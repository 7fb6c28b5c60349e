"""The image, as docker-compose.yml runs it, without Docker: the Dockerfile's own steps.

Docker cannot build here, so this test reads the Dockerfile and replays it on the host: the
build stage's ENV, COPY and RUN lines into a fresh directory standing for the image (its
``/opt/venv`` moved under a temporary directory; the same locks installed with
``--require-hashes`` from PyPI), then the runtime stage's ENV and ENTRYPOINT with the
environment compose gives the service. A RUN line that fails, a lock that does not install,
or an entrypoint that does not start fails CI. Marked ``image``: it downloads the runtime
lock (pip's cache is kept, unlike in the image, so a second run is quick).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Broker, Topics, article_records, consume, produce, wait_for

from devtools.tansu import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
VENV = "/opt/venv"

pytestmark = [pytest.mark.image, pytest.mark.kafka]


@dataclass
class Stage:
    name: str
    env: list[tuple[str, str]] = field(default_factory=list)
    steps: list[tuple[str, str]] = field(default_factory=list)  # (instruction, arguments)
    workdir: str = "/"
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _stages() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction, arguments in _instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            current = Stage(arguments.split()[-1])
            stages[current.name] = current
        elif current is None:
            continue
        elif instruction == "ENV":
            current.env += [tuple(item.split("=", 1)) for item in shlex.split(arguments)]  # type: ignore[misc]
        elif instruction == "WORKDIR":
            current.workdir = arguments
        elif instruction in {"RUN", "COPY"}:
            current.steps.append((instruction, arguments))
        elif instruction == "ENTRYPOINT":
            current.entrypoint = json.loads(arguments)
        elif instruction == "HEALTHCHECK":
            current.healthcheck = json.loads(arguments.split("CMD", 1)[1])
    return stages


def _environment(stage: Stage, image: Path, base: dict[str, str]) -> dict[str, str]:
    """The stage's ENV applied over ``base``, with /opt/venv moved into ``image``."""
    env = dict(base)
    for name, value in stage.env:
        expanded = re.sub(r"\$(\w+)", lambda m: env.get(m[1], ""), value)
        env[name] = expanded.replace(VENV, str(image / VENV.lstrip("/")))
    return env


def _host_environment() -> dict[str, str]:
    keep = {"HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_CACHE_DIR"}
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("OPENBLAS_")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def _build(image: Path) -> Stage:
    """Replay the build stage into ``image``; return the runtime stage."""
    stages = _stages()
    assert set(stages) == {"build", "runtime"}, stages
    build = stages["build"]
    env = _environment(build, image, _host_environment())
    # The image keeps no pip cache; here the cache makes a second run quick.
    env.pop("PIP_NO_CACHE_DIR", None)
    assert env["PATH"].startswith(str(image / VENV.lstrip("/"))), env["PATH"]
    workdir = image / build.workdir.lstrip("/")
    workdir.mkdir(parents=True)
    for instruction, arguments in build.steps:
        if instruction == "COPY":
            *sources, target = shlex.split(arguments)
            destination = workdir / target
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(
                        path, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, destination / path.name)
            continue
        # RUN's own options (--mount=type=secret,... for the proxy CA) are BuildKit's: the
        # secret is absent here, as in a build given none, and pip uses the host's settings.
        shell = arguments
        while shell.startswith("--"):
            shell = shell.split(None, 1)[1]
        command = shell.replace(VENV, str(image / VENV.lstrip("/")))
        # The base image's python is the interpreter running the tests (its own base
        # Python when that is a venv); every later step runs from the new venv (PATH).
        if command.startswith("python -m venv"):
            command = command.replace("python -m venv", f"{sys.executable} -m venv", 1)
        ran = subprocess.run(
            ["bash", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ran.returncode == 0, f"RUN {arguments}\n{ran.stdout[-3000:]}{ran.stderr[-3000:]}"
    return stages["runtime"]


def _compose_environment(**values: str) -> dict[str, str]:
    """The classifier's environment in docker-compose.yml, with ``values`` filled in."""
    compose = yaml.safe_load(COMPOSE.read_text())
    env: dict[str, str] = {
        k: str(v) for k, v in compose["services"]["classifier"]["environment"].items()
    }
    env = {
        k: re.sub(r"\$\{(\w+):-[^}]*\}", lambda m: values.get(m[1], ""), v) for k, v in env.items()
    }
    env.update(values)
    return env


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Stage]:
    root = tmp_path_factory.mktemp("image")
    return root, _build(root)


def _run_entrypoint(
    image: tuple[Path, Stage], env_values: dict[str, str]
) -> subprocess.Popen[bytes]:
    root, runtime = image
    env = _environment(runtime, root, _host_environment())
    env.update(env_values)
    program = shutil.which(runtime.entrypoint[0], path=env["PATH"])
    assert program is not None
    assert program.startswith(str(root)), program
    return subprocess.Popen(
        [program, *runtime.entrypoint[1:]],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_image_refuses_to_start_without_a_model(image: tuple[Path, Stage]) -> None:
    """The entrypoint with the image's environment and no model exits with status 2 and
    says which variable to set."""
    process = _run_entrypoint(image, {})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert b"ARTICLE_CLASSIFIER_MODEL" in stderr


async def test_the_image_serves_with_compose_environment(
    image: tuple[Path, Stage],
    broker: Broker,
    topics: Topics,
    model_dir: Path,
) -> None:
    """With compose's environment (metrics moved to 127.0.0.1 and a free port, the embedded
    broker for kafka:9092, the model pinned by its digest) the image's entrypoint starts,
    passes the image's HEALTHCHECK command, gets ready and classifies, and stops on SIGTERM
    with status 0."""
    port = free_port()
    digest = hashlib.sha256((model_dir / "model.json").read_bytes()).hexdigest()
    env = _compose_environment(
        ARTICLE_CLASSIFIER_MODEL_SHA256=digest,
        ARTICLE_CLASSIFIER_MODEL=str(model_dir),
        ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        ARTICLE_CLASSIFIER_INPUT_TOPIC=topics.input,
        ARTICLE_CLASSIFIER_OUTPUT_TOPIC=topics.output,
        ARTICLE_CLASSIFIER_DEAD_LETTER_TOPIC=topics.dead_letter,
        ARTICLE_CLASSIFIER_GROUP_ID=topics.group,
        ARTICLE_CLASSIFIER_METRICS_HOST="127.0.0.1",
        ARTICLE_CLASSIFIER_METRICS_PORT=str(port),
    )
    process = _run_entrypoint(image, env)
    root, runtime = image
    try:

        def answers(path: str) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    status: Any = r.status
                    return bool(status == 200)
            except OSError:
                assert process.poll() is None, "the service exited"
                return False

        await wait_for(lambda: answers("/healthz"), timeout_s=60)
        check_env = _environment(runtime, root, _host_environment()) | env
        check = await asyncio.to_thread(
            subprocess.run,
            runtime.healthcheck,
            env=check_env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        await wait_for(lambda: answers("/readyz"), timeout_s=60)
        await produce(broker.bootstrap_servers, topics.input, article_records(5))
        assert len(await consume(broker.bootstrap_servers, topics.output, 5)) == 5
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
