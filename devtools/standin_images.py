"""Stand-ins for the registry images, built from Debian packages where no registry is reachable.

The Dockerfile and docker-compose.yml name registry images (python:3.11-slim, apache/kafka,
prom/prometheus); a machine that cannot pull them builds look-alikes instead:

- ``python``: Debian bookworm's Python 3.11 with venv, ``python`` and useradd (mmdebstrap),
  given to the Dockerfile as ``--build-arg PYTHON_IMAGE=<tag>``;
- ``kafka``: Debian's Java 17 with the Apache Kafka jars the tests fetch with Maven
  (devtools/kafka_jars.py), configured from ``KAFKA_*`` variables as apache/kafka is, for
  compose's ``KAFKA_IMAGE``;
- ``prometheus``: Debian's prometheus package, for compose's
  ``PROMETHEUS_IMAGE``.

Each tag ends in a digest of what goes into it (packages, files, Kafka version), so an
image is built once per machine and reused until that changes. Debian packages come through
the host's apt configuration (proxy included); nothing of the host's trust store is copied.

    python -m devtools.standin_images python kafka prometheus   # prints one tag per line
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devtools.kafka_jars import DEFAULT_KAFKA_VERSION, fetch_kafka

SUITE = "bookworm"
KAFKA_IMAGE_DIR = Path(__file__).resolve().parent / "kafka_image"
REPOSITORY = "article-classifier-standin"


class StandinError(RuntimeError):
    """A stand-in image could not be built; the message says which step failed."""


@dataclass(frozen=True)
class _Base:
    """A Debian root file system made by mmdebstrap and imported as an image."""

    name: str
    packages: tuple[str, ...]
    changes: tuple[str, ...] = ()
    #: mmdebstrap customize hooks: shell run on the host, $1 the new root.
    hooks: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        recipe = "\n".join([SUITE, *self.packages, *self.changes, *self.hooks])
        return f"{REPOSITORY}/{self.name}:{SUITE}-{_digest(recipe.encode())}"


PYTHON = _Base(
    "python",
    ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates"),
    ('CMD ["python3"]',),
)
JAVA = _Base("java", ("openjdk-17-jre-headless", "passwd", "ca-certificates"))
#: busybox alone (extracted, not installed): the base of the model image (ops/model-image).
BUSYBOX = _Base("busybox", ("busybox-static",), ("variant=extract",))
PROMETHEUS = _Base(
    "prometheus",
    ("prometheus", "wget", "ca-certificates"),
    (
        "USER nobody",
        "WORKDIR /prometheus",
        'ENTRYPOINT ["/usr/bin/prometheus"]',
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]',
    ),
    # As in prom/prometheus: the data directory belongs to nobody, so a named volume does too.
    ("mkdir -p $1/prometheus && chown 65534:65534 $1/prometheus",),
)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _run(command: Sequence[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise StandinError(f"{what} failed (status {result.returncode}):\n{result.stderr[-3000:]}")


def image_exists(tag: str) -> bool:
    """Whether the local Docker engine has ``tag``."""
    result = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, check=False, timeout=60
    )
    return result.returncode == 0


def _nice() -> list[str]:
    # CPU-heavy steps yield to the other work on a shared machine.
    return ["nice", "-n", "10"] if shutil.which("nice") else []


def build_base(base: _Base) -> str:
    """``base``'s image (mmdebstrap | docker import), built unless its tag exists."""
    if image_exists(base.tag):
        return base.tag
    if shutil.which("mmdebstrap") is None:
        raise StandinError("mmdebstrap not installed (apt-get install -y mmdebstrap)")
    variant = "extract" if "variant=extract" in base.changes else "apt"
    with tempfile.TemporaryDirectory(prefix="standin-") as scratch:
        tarball = Path(scratch) / "rootfs.tar"
        _run(
            [
                *_nice(), "mmdebstrap", f"--variant={variant}", "--quiet",
                f"--include={','.join(base.packages)}",
                # No apt lists or caches in the image.
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                *(f"--customize-hook={hook}" for hook in base.hooks),
                SUITE, str(tarball),
            ],
            f"mmdebstrap of {base.tag}",
        )  # fmt: skip
        changes = [
            arg for change in base.changes if "=" not in change.split()[0]
            for arg in ("--change", change)
        ]  # fmt: skip
        _run(["docker", "import", *changes, str(tarball), base.tag], f"docker import {base.tag}")
    return base.tag


def python_image() -> str:
    """The stand-in for python:3.11-slim (the Dockerfile's PYTHON_IMAGE)."""
    return build_base(PYTHON)


def busybox_image() -> str:
    """The stand-in for busybox: Debian's static busybox at /bin/busybox, nothing else."""
    return build_base(BUSYBOX)


def prometheus_image() -> str:
    """The stand-in for prom/prometheus: Debian's prometheus, run as nobody."""
    return build_base(PROMETHEUS)


def kafka_image(version: str = DEFAULT_KAFKA_VERSION) -> str:
    """The stand-in for apache/kafka:<version>: Debian's Java and the Maven-fetched jars."""
    recipe = b"".join(
        path.name.encode() + path.read_bytes() for path in sorted(KAFKA_IMAGE_DIR.iterdir())
    )
    java = build_base(JAVA)
    tag = f"{REPOSITORY}/kafka:{version}-{_digest(recipe + java.encode())}"
    if image_exists(tag):
        return tag
    libs = fetch_kafka(version)
    docker = buildkit_docker()
    if docker is None:
        raise StandinError("no docker CLI that builds with BuildKit (buildx, or Docker 20.10+)")
    with tempfile.TemporaryDirectory(prefix="standin-kafka-") as scratch:
        context = Path(scratch)
        shutil.copytree(KAFKA_IMAGE_DIR, context, dirs_exist_ok=True)
        shutil.copytree(libs / "libs", context / "libs")
        _run(
            [
                *_nice(), docker, "build", "--quiet", "--tag", tag,
                "--build-arg", f"JAVA_IMAGE={java}", str(context),
            ],
            f"docker build {tag}",
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )  # fmt: skip
    return tag


def buildkit_docker() -> str | None:
    """A docker CLI that builds with BuildKit (``--secret``): one with the buildx plugin, or
    a 20.x/22.x CLI (BuildKit built in); None when there is none. The first ``docker`` on
    PATH comes first; Debian's docker.io CLI (/usr/bin/docker) is the fallback."""
    candidates = [shutil.which("docker"), "/usr/bin/docker"]
    for cli in dict.fromkeys(c for c in candidates if c and Path(c).exists()):
        buildx = subprocess.run(
            [cli, "buildx", "version"], capture_output=True, check=False, timeout=60
        )
        if buildx.returncode == 0:
            return cli
        version = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        major = version.stdout.strip().split(".")[0]
        if major.isdigit() and 18 < int(major) < 23:
            return cli
    return None


_BUILDERS = {
    "python": python_image,
    "busybox": busybox_image,
    "kafka": kafka_image,
    "prometheus": prometheus_image,
}


def build_all(names: Sequence[str]) -> dict[str, str]:
    """The stand-ins ``names`` built side by side (mmdebstrap mostly waits on downloads and
    unpacking): name -> tag."""
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        futures = {name: pool.submit(_BUILDERS[name]) for name in names}
        return {name: future.result() for name, future in futures.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.standin_images",
        description="Build (once) stand-ins for registry images from Debian packages and "
        "print their tags.",
    )
    parser.add_argument("images", nargs="+", choices=sorted(_BUILDERS))
    args = parser.parse_args(argv)
    try:
        for tag in build_all(list(dict.fromkeys(args.images))).values():
            print(tag)
    except StandinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
