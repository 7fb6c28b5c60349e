"""Artifacts: round-trip, atomic replacement, and refusal of anything doubtful."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import pytest
import sklearn
import sklearn.base

from model import ArtifactError, Predictor, TrainedModel, load_labelled, save_artifact, train
from model.artifact import MANIFEST_FILE, MODEL_FILE

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    """One demo model for the module."""
    return train(load_labelled([DEMO]).records, name="demo", version="v1")


@pytest.fixture
def artifact(trained: TrainedModel, tmp_path: Path) -> Path:
    """The demo model saved to a fresh directory."""
    return save_artifact(trained, tmp_path / "model")


def _edit_manifest(directory: Path, change: dict[str, Any]) -> None:
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(change)
    path.write_text(json.dumps(manifest))


def test_round_trip_predicts_the_same(trained: TrainedModel, artifact: Path) -> None:
    """A saved and loaded model predicts exactly what the in-memory model predicts."""
    assert sorted(p.name for p in artifact.iterdir()) == [MODEL_FILE, MANIFEST_FILE]
    loaded = Predictor.load(artifact)
    assert (loaded.name, loaded.version) == ("demo", "v1")
    assert loaded.sections == tuple(trained.manifest.sections)
    assert loaded.tags == tuple(trained.manifest.tags)
    articles = load_labelled([DEMO]).records
    assert loaded.predict(articles) == Predictor.from_trained(trained).predict(articles)


def test_manifest_describes_the_model(artifact: Path) -> None:
    """model.json names the libraries, data fingerprint, metrics and the joblib hash."""
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    assert set(manifest["libraries"]) == {"python", "scikit_learn", "numpy", "scipy", "joblib"}
    assert len(manifest["model_sha256"]) == len(manifest["training_data_sha256"]) == 64
    assert manifest["created_at"].endswith("Z")
    assert manifest["metrics"]["section"]["per_label"][0]["f1"] >= 0
    assert manifest["metrics"]["tags"]["per_label"][0]["threshold"] is not None


def test_saving_replaces_an_existing_artifact(trained: TrainedModel, artifact: Path) -> None:
    """Saving over an artifact replaces it whole and leaves no temporary directory."""
    _edit_manifest(artifact, {"name": "broken"})
    save_artifact(trained, artifact)
    assert Predictor.load(artifact).name == "demo"
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["model"]


def test_saving_refuses_to_overwrite_an_unrelated_directory(
    trained: TrainedModel, tmp_path: Path
) -> None:
    """A non-empty directory without a manifest is never overwritten."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="holds no model artifact"):
        save_artifact(trained, tmp_path / "notes")


def test_flipped_byte_in_model_file_is_refused(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One changed byte of model.joblib fails the hash check and joblib.load is never called."""
    path = artifact / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("joblib.load called on an unverified file")

    monkeypatch.setattr(joblib, "load", forbidden)
    with pytest.raises(ArtifactError, match=r"sha256 .* does not match"):
        Predictor.load(artifact)


def test_edited_manifest_is_refused(artifact: Path) -> None:
    """A manifest edited after saving no longer matches the model it describes."""
    _edit_manifest(artifact, {"tags": ["made-up"]})
    with pytest.raises(ArtifactError, match="manifest was edited"):
        Predictor.load(artifact)


def test_edited_hash_in_manifest_is_refused(artifact: Path) -> None:
    """Changing the recorded hash makes the model file fail verification."""
    _edit_manifest(artifact, {"model_sha256": "0" * 64})
    with pytest.raises(ArtifactError, match="does not match"):
        Predictor.load(artifact)


@pytest.mark.parametrize("version", ["0.24.2", "1.8.0", "2.9.1"])
def test_other_scikit_learn_version_is_refused(artifact: Path, version: str) -> None:
    """A model trained with another scikit-learn major.minor is refused before unpickling."""
    path = artifact / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["libraries"]["scikit_learn"] = version
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=f"trained with scikit-learn {version}"):
        Predictor.load(artifact)


def test_pickled_by_other_scikit_learn_is_refused(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scikit-learn's InconsistentVersionWarning on unpickling becomes a refusal."""
    # The estimator records the version that pickled it; pretend this one is different.
    monkeypatch.setattr(sklearn.base, "__version__", "1.9.999")
    monkeypatch.setattr(sklearn, "__version__", "1.9.999")
    with pytest.raises(ArtifactError, match=r"unpickle estimator .* from version"):
        Predictor.load(artifact)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no-manifest", "cannot read the manifest"),
        ("no-model", "cannot read model.joblib"),
        ("not-json", "malformed manifest"),
        ("missing-field", "malformed manifest"),
    ],
)
def test_missing_or_malformed_files_are_refused(artifact: Path, damage: str, message: str) -> None:
    """Missing files and malformed manifests give a clear ArtifactError."""
    if damage == "no-manifest":
        (artifact / MANIFEST_FILE).unlink()
    elif damage == "no-model":
        (artifact / MODEL_FILE).unlink()
    elif damage == "not-json":
        (artifact / MANIFEST_FILE).write_text("{")
    else:
        manifest = json.loads((artifact / MANIFEST_FILE).read_text())
        del manifest["model_sha256"]
        (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(artifact)
