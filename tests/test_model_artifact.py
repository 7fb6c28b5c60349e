"""Artifacts: round-trip, atomic replacement, and refusal of anything doubtful.

Most refusals here rewrite a data file *and* its size and sha256 in the manifest, as an
attacker with write access to the model directory would: the hash check then passes and
the loader's own validation has to catch the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from model import ArtifactError, Predictor, TrainedModel, load_labelled, save_artifact, train
from model.artifact import LEGACY_MODEL_FILE, MANIFEST_FILE, load_artifact
from model.artifact_data import ARRAYS, ARRAYS_FILE, DATA_FILES, PARAMS_FILE, Params
from model.inference import LinearTextModel

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"


class TouchMarker:
    """A pickle payload that creates ``marker`` when unpickled: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    """One demo model for the module."""
    return train(load_labelled([DEMO]).records, name="demo", version="v1")


@pytest.fixture
def artifact(trained: TrainedModel, tmp_path: Path) -> Path:
    """The demo model saved to a fresh directory."""
    return save_artifact(trained, tmp_path / "model")


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """A path that must still not exist when the test ends."""
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "code from the artifact ran"


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling during the test fails it."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (joblib, "load"), (np, "load")):
        monkeypatch.setattr(module, name, forbidden)


def _manifest(directory: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
    return loaded


def _edit_manifest(directory: Path, change: dict[str, Any]) -> None:
    manifest = _manifest(directory)
    manifest.update(change)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _rewrite(directory: Path, name: str, data: bytes) -> None:
    """Replace a data file and record its new size and sha256 in the manifest."""
    (directory / name).write_bytes(data)
    manifest = _manifest(directory)
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _arrays(directory: Path) -> dict[str, np.ndarray[Any, Any]]:
    with zipfile.ZipFile(directory / ARRAYS_FILE) as archive:
        return {
            name.removesuffix(".npy"): np.lib.format.read_array(io.BytesIO(archive.read(name)))
            for name in archive.namelist()
        }


def _npz(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # pickles object arrays, as an attacker's file would
    return buffer.getvalue()


def _params(directory: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((directory / PARAMS_FILE).read_text())
    return loaded


# -- the format ---------------------------------------------------------------------------


def test_round_trip_predicts_the_same(trained: TrainedModel, artifact: Path) -> None:
    """A saved and loaded model gives exactly the in-memory model's features and scores."""
    assert sorted(p.name for p in artifact.iterdir()) == sorted([MANIFEST_FILE, *DATA_FILES])
    loaded = Predictor.load(artifact)
    assert (loaded.name, loaded.version) == ("demo", "v1")
    assert loaded.sections == tuple(trained.manifest.sections)
    assert loaded.tags == tuple(trained.manifest.tags)
    articles = load_labelled([DEMO]).records
    in_memory = Predictor.from_trained(trained)
    assert loaded.predict(articles) == in_memory.predict(articles)
    ours, theirs = loaded.score(articles), in_memory.score(articles)
    for field in ("section_probabilities", "tag_scores", "tag_decisions"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))


def test_inference_features_equal_the_training_vectoriser(
    trained: TrainedModel, artifact: Path
) -> None:
    """The stored vocabulary and idf reproduce the fitted TfidfVectorizer's features."""
    texts = [f"{a.title}\n{a.body}" for a in load_labelled([DEMO]).records[:50]]
    expected = trained.estimator.vectorizer_.transform(texts).toarray()
    compiled = Predictor.load(artifact)._compiled
    np.testing.assert_allclose(compiled._vectorizer.transform(texts).toarray(), expected, atol=1e-6)


def test_every_model_field_is_stored_exactly_once() -> None:
    """Each LinearTextModel field is an array in ARRAYS or a field of params.json, not both."""
    fields = {field.name for field in dataclasses.fields(LinearTextModel)}
    arrays = set(ARRAYS)
    params = set(Params.model_fields) - {"token_pattern", "lowercase", "sublinear_tf", "norm"}
    assert not arrays & params
    assert arrays | params == fields


def test_saving_is_deterministic(trained: TrainedModel, tmp_path: Path) -> None:
    """The same model gives byte-identical data files (so equal models have equal hashes)."""
    first = save_artifact(trained, tmp_path / "a")
    second = save_artifact(trained, tmp_path / "b")
    for name in DATA_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_arrays_file_is_a_standard_npz(artifact: Path) -> None:
    """arrays.npz opens with numpy's own loader, without pickle, holding float32 arrays."""
    with np.load(artifact / ARRAYS_FILE, allow_pickle=False) as stored:
        assert set(stored.files) == set(ARRAYS)
        assert all(stored[name].dtype == np.float32 for name in stored.files)


def test_manifest_describes_the_model_and_its_files(artifact: Path) -> None:
    """model.json names the format, libraries, metrics and every data file's size and sha256."""
    manifest = _manifest(artifact)
    assert manifest["format_version"] == 2
    assert set(manifest["libraries"]) == {"python", "scikit_learn", "numpy", "scipy", "joblib"}
    assert set(manifest["files"]) == set(DATA_FILES)
    for name, described in manifest["files"].items():
        data = (artifact / name).read_bytes()
        assert described == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["created_at"].endswith("Z")
    assert manifest["metrics"]["tags"]["per_label"][0]["threshold"] is not None


def test_digest_is_the_sha256_of_the_manifest_bytes(artifact: Path) -> None:
    """The artifact digest (what --model-sha256 pins) is the sha256 of model.json's bytes."""
    loaded = load_artifact(artifact)
    assert loaded.sha256 == hashlib.sha256((artifact / MANIFEST_FILE).read_bytes()).hexdigest()
    assert Predictor.load(artifact).artifact_sha256 == loaded.sha256


def test_saving_replaces_an_existing_artifact(trained: TrainedModel, artifact: Path) -> None:
    """Saving over an artifact replaces it whole and leaves no temporary directory."""
    _edit_manifest(artifact, {"name": "broken"})
    (artifact / "model.json.sig").write_bytes(b"x" * 64)
    save_artifact(trained, artifact)
    assert Predictor.load(artifact).name == "demo"
    assert not (artifact / "model.json.sig").exists()
    assert sorted(p.name for p in artifact.parent.iterdir()) == ["model"]


def test_saving_refuses_to_overwrite_an_unrelated_directory(
    trained: TrainedModel, tmp_path: Path
) -> None:
    """A non-empty directory without a manifest is never overwritten."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="holds no model artifact"):
        save_artifact(trained, tmp_path / "notes")


def test_another_scikit_learn_version_still_loads(artifact: Path) -> None:
    """Inference needs no scikit-learn object, so a model from another version loads."""
    manifest = _manifest(artifact)
    manifest["libraries"]["scikit_learn"] = "1.0.2"
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert Predictor.load(artifact).name == "demo"


# -- hashes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATA_FILES)
def test_flipped_byte_in_a_data_file_is_refused(artifact: Path, name: str) -> None:
    """One changed byte of a data file fails its sha256 check."""
    path = artifact / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{name}: sha256 .* does not match"):
        Predictor.load(artifact)


@pytest.mark.parametrize("name", DATA_FILES)
def test_a_shorter_or_longer_data_file_is_refused(artifact: Path, name: str) -> None:
    """A truncated or extended data file is refused by its size before its hash."""
    path = artifact / name
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ArtifactError, match=rf"{name}: {len(data) - 10} bytes, the manifest"):
        Predictor.load(artifact)
    path.write_bytes(data + b"\0")
    with pytest.raises(ArtifactError, match=rf"{name}: more than {len(data)} bytes"):
        Predictor.load(artifact)


def test_edited_labels_in_manifest_are_refused(artifact: Path) -> None:
    """A manifest whose labels differ from the stored model's is refused."""
    _edit_manifest(artifact, {"tags": ["made-up"]})
    with pytest.raises(ArtifactError, match="manifest was edited"):
        Predictor.load(artifact)


# -- code never runs ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_unpickling")
@pytest.mark.parametrize("name", [*DATA_FILES, MANIFEST_FILE])
def test_a_pickle_in_place_of_any_file_never_runs(artifact: Path, marker: Path, name: str) -> None:
    """A pickle written over any file (manifest updated to match) is refused unexecuted."""
    payload = pickle.dumps(TouchMarker(marker))
    if name == MANIFEST_FILE:
        (artifact / name).write_bytes(payload)
    else:
        _rewrite(artifact, name, payload)
    with pytest.raises(ArtifactError):
        Predictor.load(artifact)


@pytest.mark.usefixtures("no_unpickling")
@pytest.mark.parametrize("array", sorted(ARRAYS))
def test_a_pickled_object_array_inside_the_npz_never_runs(
    artifact: Path, marker: Path, array: str
) -> None:
    """An object array (pickled inside arrays.npz) is refused from its header, unexecuted."""
    arrays = _arrays(artifact)
    arrays[array] = np.array([TouchMarker(marker)], dtype=object)
    _rewrite(artifact, ARRAYS_FILE, _npz(arrays))
    with pytest.raises(ArtifactError, match=rf"{ARRAYS_FILE}: {array}: dtype \|O, expected <f4"):
        Predictor.load(artifact)


def test_the_payloads_would_run_if_unpickled(tmp_path: Path) -> None:
    """Control: the payloads used above do run code when unpickled, so the tests can fail."""
    first, second = tmp_path / "first", tmp_path / "second"
    pickle.loads(pickle.dumps(TouchMarker(first)))
    buffer = io.BytesIO(_npz({"x": np.array([TouchMarker(second)], dtype=object)}))
    np.load(buffer, allow_pickle=True)["x"]
    assert first.exists()
    assert second.exists()


def _legacy_artifact(directory: Path, marker: Path) -> bytes:
    directory.mkdir()
    payload = pickle.dumps(TouchMarker(marker))
    (directory / LEGACY_MODEL_FILE).write_bytes(payload)
    return payload


@pytest.mark.usefixtures("no_unpickling")
def test_a_format_1_artifact_is_refused_without_unpickling(
    artifact: Path, tmp_path: Path, marker: Path
) -> None:
    """An old model.joblib artifact, hash and all, is refused with how to get a new one."""
    old = tmp_path / "old"
    payload = _legacy_artifact(old, marker)
    manifest = _manifest(artifact)
    del manifest["files"]
    manifest.update(
        format_version=1,
        model_file=LEGACY_MODEL_FILE,
        model_sha256=hashlib.sha256(payload).hexdigest(),
    )
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(
        ArtifactError, match=r"format 1 .*no longer loaded.*article-classifier train"
    ):
        Predictor.load(old)


@pytest.mark.usefixtures("no_unpickling")
def test_a_lone_model_joblib_is_refused_without_unpickling(tmp_path: Path, marker: Path) -> None:
    """A directory with only model.joblib is named as the old format, not just 'missing'."""
    old = tmp_path / "old"
    _legacy_artifact(old, marker)
    with pytest.raises(ArtifactError, match="format 1"):
        Predictor.load(old)


# -- structural validation ----------------------------------------------------------------


def _with_array(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], bytes]:
    def build(directory: Path) -> bytes:
        arrays: dict[str, Any] = _arrays(directory)
        change(arrays)
        return _npz(arrays)

    return build


def _set(name: str, value: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def change(arrays: dict[str, Any]) -> None:
        arrays[name] = value(arrays[name])

    return change


def _nan(array: Any) -> Any:
    changed = array.copy()
    changed.flat[0] = np.nan
    return changed


def _inf(array: Any) -> Any:
    changed = array.copy()
    changed.flat[-1] = np.inf
    return changed


def _member_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path], bytes]:
    """arrays.npz with weights.npy's raw bytes transformed (a corrupt member)."""

    def build(directory: Path) -> bytes:
        buffer = io.BytesIO()
        with (
            zipfile.ZipFile(directory / ARRAYS_FILE) as source,
            zipfile.ZipFile(buffer, "w") as target,
        ):
            for name in source.namelist():
                data = source.read(name)
                target.writestr(name, transform(data) if name == "weights.npy" else data)
        return buffer.getvalue()

    return build


def _zip_headers(field: str, change: Callable[[int], int]) -> Callable[[Path], bytes]:
    """arrays.npz with a field of every local and central zip header changed in place."""
    offsets = {"flags": (6, 8), "method": (8, 10)}[field]

    def build(directory: Path) -> bytes:
        data = bytearray((directory / ARRAYS_FILE).read_bytes())
        for signature, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), offsets, strict=True):
            at = data.find(signature)
            while at != -1:
                (value,) = struct.unpack_from("<H", data, at + offset)
                struct.pack_into("<H", data, at + offset, change(value))
                at = data.find(signature, at + 4)
        return bytes(data)

    return build


def _corrupt_deflate(directory: Path) -> bytes:
    """arrays.npz with bytes inside weights.npy's deflate stream inverted."""
    data = bytearray((directory / ARRAYS_FILE).read_bytes())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("weights.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for index in range(start + 10, start + 60):
        data[index] ^= 0xFF
    return bytes(data)


_BAD_ARRAYS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "encrypted members": (_zip_headers("flags", lambda v: v | 1), "idf: not a valid .npy"),
    "unknown compression": (_zip_headers("method", lambda v: 99), "idf: not a valid .npy"),
    "corrupt deflate data": (_corrupt_deflate, "weights: not a valid .npy array"),
    "empty file": (lambda d: b"", "not a valid npz"),
    "truncated file": (
        lambda d: (d / ARRAYS_FILE).read_bytes()[: (d / ARRAYS_FILE).stat().st_size // 2],
        "not a valid npz",
    ),
    "not a zip": (lambda d: b"\x93NUMPY not a zip at all", "not a valid npz"),
    "wrong shape": (
        _with_array(_set("weights", lambda a: a[:-1])),
        r"weights: shape \(\d+, \d+\), expected \(\d+, \d+\) \(features=\d+, labels=\d+ in params",
    ),
    "transposed": (_with_array(_set("weights", lambda a: a.T.copy())), "weights: shape"),
    "wrong dtype": (
        _with_array(_set("bias", lambda a: a.astype(np.float64))),
        "bias: dtype <f8, expected <f4",
    ),
    "integer dtype": (
        _with_array(_set("idf", lambda a: a.astype(np.int32))),
        "idf: dtype <i4, expected <f4",
    ),
    "big-endian": (
        _with_array(_set("idf", lambda a: a.astype(">f4"))),
        "idf: dtype >f4, expected <f4",
    ),
    "NaN": (_with_array(_set("bias", _nan)), "bias: holds NaN or infinite values"),
    "infinity": (_with_array(_set("weights", _inf)), "weights: holds NaN or infinite values"),
    "scalar": (_with_array(_set("tag_thresholds", lambda a: a[0])), "tag_thresholds: shape"),
    "extra array": (
        _with_array(lambda a: a.update(extra=np.zeros(3, np.float32))),
        r"unexpected member\(s\) extra.npy",
    ),
    "missing array": (_with_array(lambda a: a.pop("idf")), r"missing array\(s\) idf.npy"),
    "truncated member": (_member_bytes(lambda b: b[:-8]), r"weights: truncated \(\d+ of \d+"),
    "trailing bytes": (_member_bytes(lambda b: b + b"\0" * 4), "weights: data after the array"),
    "garbage member": (_member_bytes(lambda b: b"garbage"), "weights: not a valid .npy array"),
}


@pytest.mark.parametrize("case", sorted(_BAD_ARRAYS))
def test_bad_arrays_are_refused_clearly(artifact: Path, case: str) -> None:
    """Each malformed arrays.npz (manifest rewritten to match) gives an error naming it."""
    build, message = _BAD_ARRAYS[case]
    _rewrite(artifact, ARRAYS_FILE, build(artifact))
    with pytest.raises(ArtifactError, match=rf"{ARRAYS_FILE}: .*{message}"):
        Predictor.load(artifact)


def _params_change(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], bytes]:
    def build(directory: Path) -> bytes:
        params = _params(directory)
        change(params)
        return json.dumps(params).encode()

    return build


def _update(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda params: params.update(values)


_BAD_PARAMS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "empty file": (lambda d: b"", "invalid"),
    "not JSON": (lambda d: b"{", "invalid"),
    "a list": (lambda d: b"[]", "invalid"),
    "deeply nested": (lambda d: b"[" * 100_000, "invalid"),
    "not UTF-8": (lambda d: b'{"vocabulary": ["caf\xe9"]}', "invalid"),
    "vocabulary one short": (
        _params_change(lambda p: p["vocabulary"].pop()),
        "arrays.npz: idf: shape",
    ),
    "repeated term": (
        _params_change(lambda p: p["vocabulary"].__setitem__(1, p["vocabulary"][0])),
        "vocabulary: Value error, repeats an entry",
    ),
    "one section more": (
        _params_change(lambda p: p["sections"].append("extra")),
        "arrays.npz: weights: shape",
    ),
    "NaN temperature": (
        _params_change(_update(section_temperature=float("nan"))),
        "section_temperature",
    ),
    "negative slope": (_params_change(_update(tag_slope=-1.0)), "tag_slope"),
    "other tokeniser": (_params_change(_update(token_pattern=r"\w+")), "token_pattern"),
    "no lowercasing": (_params_change(_update(lowercase=False)), "lowercase"),
    "other norm": (_params_change(_update(norm="l1")), "norm"),
    "unknown field": (_params_change(_update(surprise=1)), "surprise"),
    "missing field": (_params_change(lambda p: p.pop("tags")), "tags"),
    "string for a number": (_params_change(_update(ngram_max="1")), "ngram_max"),
    "shapes over the memory budget": (
        _params_change(lambda p: p["tags"].extend(f"t{n}" for n in range(300_000))),
        "bytes of arrays, more than the 1,073,741,824 this loader accepts",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_PARAMS))
def test_bad_params_are_refused_clearly(artifact: Path, case: str) -> None:
    """Each malformed params.json (manifest rewritten to match) gives an error naming it."""
    build, message = _BAD_PARAMS[case]
    _rewrite(artifact, PARAMS_FILE, build(artifact))
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(artifact)


def test_labels_changed_consistently_in_params_are_refused(artifact: Path) -> None:
    """Renamed tags in params.json (hash updated) no longer match the manifest's tags."""
    params = _params(artifact)
    params["tags"] = [f"x-{tag}" for tag in params["tags"]]
    _rewrite(artifact, PARAMS_FILE, json.dumps(params).encode())
    with pytest.raises(ArtifactError, match="tags do not match"):
        Predictor.load(artifact)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no-manifest", "cannot read the manifest"),
        ("no-arrays", f"cannot read {ARRAYS_FILE}"),
        ("no-params", f"cannot read {PARAMS_FILE}"),
        ("not-json", "malformed manifest"),
        ("deeply-nested", "malformed manifest"),
        ("not-utf8", "malformed manifest"),
        ("missing-field", "malformed manifest"),
        ("extra-file", r"unexpected extra.bin"),
        ("missing-file", r"missing params.json"),
        ("newer-format", "format_version 3 is newer"),
        ("huge-manifest", "larger than 16777216 bytes, not a manifest"),
    ],
)
def test_missing_or_malformed_files_are_refused(artifact: Path, damage: str, message: str) -> None:
    """Missing files and malformed manifests give a clear ArtifactError."""
    manifest = _manifest(artifact)
    if damage == "no-manifest":
        (artifact / MANIFEST_FILE).unlink()
    elif damage == "no-arrays":
        (artifact / ARRAYS_FILE).unlink()
    elif damage == "no-params":
        (artifact / PARAMS_FILE).unlink()
    elif damage == "not-json":
        (artifact / MANIFEST_FILE).write_text("{")
    elif damage == "deeply-nested":
        (artifact / MANIFEST_FILE).write_bytes(b'{"a": ' + b"[" * 100_000)
    elif damage == "not-utf8":
        (artifact / MANIFEST_FILE).write_bytes(b'{"name": "caf\xe9"}')
    elif damage == "missing-field":
        del manifest["name"]
    elif damage == "extra-file":
        manifest["files"]["extra.bin"] = manifest["files"][ARRAYS_FILE]
    elif damage == "missing-file":
        del manifest["files"][PARAMS_FILE]
    elif damage == "huge-manifest":
        (artifact / MANIFEST_FILE).write_bytes(b" " * (16 * 2**20 + 1))
    elif damage == "newer-format":
        manifest["format_version"] = 3
    if damage in {"missing-field", "extra-file", "missing-file", "newer-format"}:
        (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(artifact)


def test_a_manifest_claiming_a_huge_data_file_is_refused_before_reading(artifact: Path) -> None:
    """A manifest whose data file size is beyond any model's is refused unread."""
    manifest = _manifest(artifact)
    manifest["files"][PARAMS_FILE]["bytes"] = 2**40
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"malformed manifest.*files\.params\.json\.bytes"):
        Predictor.load(artifact)
