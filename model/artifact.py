"""Writing and reading model artifacts: data files plus the ``model.json`` manifest.

An artifact is a directory holding ``model.json`` (the model card, the format version and
the size and sha256 of every data file) and the data files of ``model.artifact_data``.
Nothing in it is code: loading never unpickles, so a changed file can at worst be refused.

The loader reads each file's bytes once and works only on those bytes: the manifest is
checked against the deployment's trust settings (``model.trust``: a pinned digest and/or
a signature) before it is even parsed, each data file against the manifest's sha256
before it is decoded, and the decoded arrays against the labels and vocabulary before a
model is built. The sha256 values in the manifest detect corruption and partial copies;
they do not prove who wrote the artifact (whoever can write a data file can rewrite the
manifest too). That is what the pin and the signature are for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from model.artifact_data import DATA_FILES, decode, encode
from model.errors import ArtifactError
from model.inference import LinearTextModel
from model.manifest import FORMAT_VERSION, DataFile, Manifest
from model.training import TrainedModel
from model.trust import SIGNATURE_FILE, ArtifactTrust, load_private_key, sign_manifest

MANIFEST_FILE = "model.json"
#: A manifest is tens of kilobytes (per-label metrics); anything this large is not one.
MAX_MANIFEST_BYTES = 16 * 2**20
#: The pickle of format 1; never opened, only recognised so it can be refused clearly.
LEGACY_MODEL_FILE = "model.joblib"
RETRAIN_HINT = (
    "retrain it with this version (`article-classifier train --data FILE ... --out DIR`) "
    "to get a data-only artifact"
)


@dataclass(frozen=True, slots=True, eq=False)
class LoadedArtifact:
    """A verified artifact: its manifest, its model and the sha256 of its ``model.json``."""

    manifest: Manifest
    model: LinearTextModel
    sha256: str


def save_artifact(trained: TrainedModel, out_dir: Path) -> Path:
    """Write ``trained`` to the directory ``out_dir`` atomically; returns ``out_dir``.

    The files are written to a temporary sibling directory that is renamed into place, so
    a reader sees either the old artifact or the complete new one. An existing artifact
    (or empty directory) at ``out_dir`` is replaced, its signature included; any other
    existing path is refused.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    files = encode(trained.model)
    manifest = Manifest.model_validate(
        {
            **trained.manifest.model_dump(mode="json"),
            "format_version": FORMAT_VERSION,
            "files": {
                name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        },
        strict=False,
    )
    files[MANIFEST_FILE] = manifest.model_dump_json(indent=2).encode() + b"\n"
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as error:
        raise ArtifactError(f"cannot create {out_dir}: {error}") from error
    try:
        staging.chmod(0o755)
        for name, data in files.items():
            _write_synced(staging / name, data)
        _move_into_place(staging, out_dir)
    except OSError as error:
        raise ArtifactError(f"cannot write the artifact to {out_dir}: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def load_artifact(directory: Path, trust: ArtifactTrust | None = None) -> LoadedArtifact:
    """Read, verify and decode an artifact; raises ``ArtifactError`` rather than load a
    doubtful one (``ArtifactTrustError`` when ``trust`` refuses it)."""
    directory = Path(directory)
    raw = _read_manifest_bytes(directory)
    if trust is not None:
        trust.verify(directory, raw)
    manifest = _parse_manifest(directory, raw)
    files = {name: _read_data_file(directory, name, manifest.files[name]) for name in DATA_FILES}
    try:
        model = decode(files)
    except ArtifactError as error:
        raise ArtifactError(f"{directory}/{error}") from None
    _check_labels(directory, manifest, model)
    return LoadedArtifact(manifest, model, hashlib.sha256(raw).hexdigest())


def artifact_digest(directory: Path) -> str:
    """The sha256 of the artifact's ``model.json`` bytes: the digest to pin."""
    return hashlib.sha256(_read_manifest_bytes(Path(directory))).hexdigest()


def sign_artifact(directory: Path, key_file: Path) -> tuple[Path, str]:
    """Sign a valid artifact with the Ed25519 key in ``key_file``; returns the signature
    file and the artifact's sha256. The artifact is verified in full first: only a model
    that loads gets a signature."""
    directory = Path(directory)
    key = load_private_key(key_file)
    loaded = load_artifact(directory)
    raw = _read_manifest_bytes(directory)
    if hashlib.sha256(raw).hexdigest() != loaded.sha256:
        raise ArtifactError(f"{directory / MANIFEST_FILE} changed while it was being signed")
    path = directory / SIGNATURE_FILE
    staging = directory / f".{SIGNATURE_FILE}.tmp"
    try:
        _write_synced(staging, sign_manifest(key, raw))
        staging.replace(path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {error.strerror}") from error
    return path, loaded.sha256


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ArtifactError(f"{out_dir} exists and is not a directory")
    entries = {entry.name for entry in out_dir.iterdir()}
    if entries and MANIFEST_FILE not in entries:
        raise ArtifactError(f"{out_dir} is a non-empty directory that holds no model artifact")


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists() or not any(out_dir.iterdir()):
        # rename(2) replaces an empty directory atomically.
        staging.replace(out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    retired.rmdir()
    out_dir.replace(retired)
    try:
        staging.replace(out_dir)
    except OSError:
        retired.replace(out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _read_manifest_bytes(directory: Path) -> bytes:
    path = directory / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        if (directory / LEGACY_MODEL_FILE).exists():
            raise _legacy(directory) from None
        raise ArtifactError(f"{path}: cannot read the manifest: no such file") from None
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the manifest: {error.strerror}") from error
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes, not a manifest")
    return raw


def _legacy(directory: Path) -> ArtifactError:
    return ArtifactError(
        f"{directory} holds a format 1 artifact ({LEGACY_MODEL_FILE}, a pickle that can run "
        f"code when loaded), which is no longer loaded; {RETRAIN_HINT}"
    )


def _parse_manifest(directory: Path, raw: bytes) -> Manifest:
    path = directory / MANIFEST_FILE
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ArtifactError(f"{path}: malformed manifest: not JSON ({error})") from None
    version = document.get("format_version") if isinstance(document, dict) else None
    if version == 1 or (isinstance(document, dict) and "model_sha256" in document):
        raise _legacy(directory)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version} is newer than this version reads "
            f"({FORMAT_VERSION}); upgrade article-classifier or {RETRAIN_HINT}"
        )
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ArtifactError(
            f"{path}: malformed manifest ({error.error_count()} error(s)); "
            f"first: {where or 'document'}: {first['msg']}"
        ) from None
    listed = set(manifest.files)
    if listed != set(DATA_FILES):
        missing, extra = sorted(set(DATA_FILES) - listed), sorted(listed - set(DATA_FILES))
        raise ArtifactError(
            f"{path}: lists data files {sorted(listed)}; expected {list(DATA_FILES)}"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + (f" (unexpected {', '.join(extra)})" if extra else "")
        )
    return manifest


def _read_data_file(directory: Path, name: str, described: DataFile) -> bytes:
    path = directory / name
    try:
        with path.open("rb") as handle:
            # One byte more than described: a longer file is refused without reading it all.
            data = handle.read(described.bytes + 1)
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read {name}: {error.strerror}") from error
    if len(data) != described.bytes:
        size = f"{len(data)}" if len(data) <= described.bytes else f"more than {described.bytes}"
        raise ArtifactError(
            f"{path}: {size} bytes, the manifest says {described.bytes}; "
            "the file was truncated, changed or corrupted, refusing to load it"
        )
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, described.sha256):
        raise ArtifactError(
            f"{path}: sha256 {actual} does not match the manifest's {described.sha256}; "
            "the file was changed or corrupted, refusing to load it"
        )
    return data


def _check_labels(directory: Path, manifest: Manifest, model: LinearTextModel) -> None:
    for head, described, stored in (
        ("sections", manifest.sections, model.sections),
        ("tags", manifest.tags, model.tags),
    ):
        if tuple(described) != stored:
            raise ArtifactError(
                f"{directory / MANIFEST_FILE}: its {head} do not match the {len(stored)} "
                f"{head} of the model it describes; the manifest was edited, refusing to load"
            )


__all__ = [
    "LEGACY_MODEL_FILE",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "ArtifactTrust",
    "LoadedArtifact",
    "artifact_digest",
    "load_artifact",
    "save_artifact",
    "sign_artifact",
]
