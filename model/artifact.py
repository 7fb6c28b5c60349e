"""Writing and reading model artifacts: ``model.joblib`` plus the ``model.json`` manifest.

A joblib file is pickled code: loading one runs whatever it contains. So the loader reads
the file's bytes once, checks their sha256 against the manifest and only then unpickles
those same bytes; it also checks that the manifest is the one written with the model and
that the running scikit-learn is the one the model was trained with.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import sklearn
from pydantic import ValidationError
from sklearn.exceptions import InconsistentVersionWarning

from model.errors import ArtifactError
from model.inference import LinearTextModel
from model.manifest import FORMAT_VERSION, Manifest, ModelCard
from model.training import TrainedModel

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "model.json"


@dataclass(frozen=True, slots=True, eq=False)
class _Payload:
    """What ``model.joblib`` holds: the model and the card it was saved with."""

    card_json: str
    model: LinearTextModel


def save_artifact(trained: TrainedModel, out_dir: Path) -> Path:
    """Write ``trained`` to the directory ``out_dir`` atomically; returns ``out_dir``.

    The files are written to a temporary sibling directory that is renamed into place, so
    a reader sees either the old artifact or the complete new one. An existing artifact
    (or empty directory) at ``out_dir`` is replaced; any other existing path is refused.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as error:
        raise ArtifactError(f"cannot create {out_dir}: {error}") from error
    try:
        staging.chmod(0o755)
        payload = _Payload(card_json=trained.manifest.model_dump_json(), model=trained.model)
        buffer = io.BytesIO()
        joblib.dump(payload, buffer)
        data = buffer.getvalue()
        _write_synced(staging / MODEL_FILE, data)
        manifest = Manifest.model_validate(
            {
                **trained.manifest.model_dump(mode="json"),
                "format_version": FORMAT_VERSION,
                "model_file": MODEL_FILE,
                "model_sha256": hashlib.sha256(data).hexdigest(),
            },
            strict=False,
        )
        _write_synced(staging / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
        _move_into_place(staging, out_dir)
    except OSError as error:
        raise ArtifactError(f"cannot write the artifact to {out_dir}: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def load_artifact(directory: Path) -> tuple[Manifest, LinearTextModel]:
    """Read and verify an artifact; raises ``ArtifactError`` rather than load a doubtful one."""
    directory = Path(directory)
    manifest = _read_manifest(directory)
    _check_library_version(manifest)
    try:
        data = (directory / MODEL_FILE).read_bytes()
    except OSError as error:
        raise ArtifactError(f"{directory}: cannot read {MODEL_FILE}: {error.strerror}") from error
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, manifest.model_sha256):
        raise ArtifactError(
            f"{directory / MODEL_FILE}: sha256 {actual} does not match the manifest's "
            f"{manifest.model_sha256}; the file was changed or corrupted, refusing to load it"
        )
    payload = _unpickle(directory, data)
    _check_consistent(directory, manifest, payload)
    return manifest, payload.model


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


def _read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the manifest: {error.strerror}") from error
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ArtifactError(
            f"{path}: malformed manifest ({error.error_count()} error(s)); "
            f"first: {where or 'document'}: {first['msg']}"
        ) from None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _check_library_version(manifest: Manifest) -> None:
    trained_with = manifest.libraries.scikit_learn
    if _major_minor(trained_with) != _major_minor(sklearn.__version__):
        raise ArtifactError(
            f"the model was trained with scikit-learn {trained_with} but {sklearn.__version__} "
            "is running; retrain the model with this version"
        )


def _unpickle(directory: Path, data: bytes) -> _Payload:
    with warnings.catch_warnings():
        # scikit-learn warns when an estimator was pickled by another version; a model
        # may then behave differently, so that is a refusal, not a warning.
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            payload = joblib.load(io.BytesIO(data))
        except InconsistentVersionWarning as warning:
            raise ArtifactError(
                f"{directory / MODEL_FILE}: {warning}; retrain the model with this version"
            ) from None
        except Exception as error:
            raise ArtifactError(
                f"{directory / MODEL_FILE}: cannot unpickle the model: {error}"
            ) from error
    if not isinstance(payload, _Payload) or not isinstance(payload.model, LinearTextModel):
        raise ArtifactError(f"{directory / MODEL_FILE}: does not hold an article-classifier model")
    return payload


def _check_consistent(directory: Path, manifest: Manifest, payload: _Payload) -> None:
    try:
        saved = ModelCard.model_validate_json(payload.card_json).model_dump(mode="json")
    except ValidationError as error:
        raise ArtifactError(f"{directory / MODEL_FILE}: its model card is invalid") from error
    described = manifest.model_dump(mode="json", exclude=set(Manifest.model_fields) - set(saved))
    if saved != described:
        changed = sorted(key for key in saved if saved[key] != described.get(key))
        raise ArtifactError(
            f"{directory / MANIFEST_FILE}: does not match the model it describes "
            f"({', '.join(changed)} differ); the manifest was edited, refusing to load"
        )
