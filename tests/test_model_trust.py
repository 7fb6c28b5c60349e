"""Authenticity: a pinned digest and an Ed25519 signature accept the right artifact only."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from model import (
    ArtifactError,
    ArtifactTrust,
    ArtifactTrustError,
    Predictor,
    TrainedModel,
    artifact_digest,
    generate_key_pair,
    load_labelled,
    save_artifact,
    sign_artifact,
    train,
    trust_from_options,
)
from model.artifact import MANIFEST_FILE
from model.artifact_data import DATA_FILES
from model.trust import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SIGNATURE_FILE, load_public_key

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    """One demo model for the module."""
    return train(load_labelled([DEMO]).records, name="demo", version="v1")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair: (private, public) PEM files."""
    return generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(trained: TrainedModel, keys: tuple[Path, Path], tmp_path: Path) -> Path:
    """The demo model saved and signed."""
    directory = save_artifact(trained, tmp_path / "model")
    sign_artifact(directory, keys[0])
    return directory


def _changed_copy(source: Path, destination: Path) -> Path:
    """A copy whose manifest differs by one field (hashes all still consistent)."""
    shutil.copytree(source, destination)
    manifest = json.loads((destination / MANIFEST_FILE).read_text())
    manifest["name"] = "impostor"
    (destination / MANIFEST_FILE).write_text(json.dumps(manifest))
    return destination


def test_the_pinned_digest_accepts_the_artifact(signed: Path) -> None:
    """Pinning the sha256 that train prints loads that artifact."""
    digest = artifact_digest(signed)
    predictor = Predictor.load(signed, ArtifactTrust(sha256=digest))
    assert predictor.artifact_sha256 == digest


def test_the_pinned_digest_refuses_a_changed_artifact(signed: Path, tmp_path: Path) -> None:
    """Any change to model.json, even one that keeps every hash consistent, fails the pin."""
    digest = artifact_digest(signed)
    changed = _changed_copy(signed, tmp_path / "changed")
    with pytest.raises(ArtifactTrustError, match=rf"is not the pinned {digest}"):
        Predictor.load(changed, ArtifactTrust(sha256=digest))


@pytest.mark.parametrize("name", DATA_FILES)
def test_the_pin_covers_every_data_file(signed: Path, name: str) -> None:
    """A data file changed under a pinned manifest is refused by its hash in that manifest."""
    digest = artifact_digest(signed)
    path = signed / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{name}: sha256"):
        Predictor.load(signed, ArtifactTrust(sha256=digest))


def test_the_signature_accepts_the_artifact(signed: Path, keys: tuple[Path, Path]) -> None:
    """A signed artifact loads under the matching public key, alone or with a pin."""
    key = load_public_key(keys[1])
    assert Predictor.load(signed, ArtifactTrust(public_key=key)).name == "demo"
    both = ArtifactTrust(sha256=artifact_digest(signed), public_key=key)
    assert Predictor.load(signed, both).name == "demo"


def test_the_signature_refuses_a_changed_artifact(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """A manifest changed after signing (signature file kept) is refused."""
    changed = _changed_copy(signed, tmp_path / "changed")
    with pytest.raises(ArtifactTrustError, match="signature does not match"):
        Predictor.load(changed, ArtifactTrust(public_key=load_public_key(keys[1])))


def test_another_key_is_refused(signed: Path, tmp_path: Path) -> None:
    """A signature made with another key does not verify under the configured one."""
    _, other_public = generate_key_pair(tmp_path / "other")
    with pytest.raises(ArtifactTrustError, match="signed with another key"):
        Predictor.load(signed, ArtifactTrust(public_key=load_public_key(other_public)))


def test_a_missing_signature_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    """Asking for a signature and finding none says how to sign."""
    (signed / SIGNATURE_FILE).unlink()
    with pytest.raises(ArtifactTrustError, match=r"no signature .*article-classifier sign"):
        Predictor.load(signed, ArtifactTrust(public_key=load_public_key(keys[1])))


def test_a_malformed_signature_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    """A signature file of the wrong size is refused before verification."""
    (signed / SIGNATURE_FILE).write_bytes(b"short")
    with pytest.raises(ArtifactTrustError, match="5 bytes, not a 64-byte"):
        Predictor.load(signed, ArtifactTrust(public_key=load_public_key(keys[1])))


def test_retraining_drops_the_signature(
    trained: TrainedModel, signed: Path, keys: tuple[Path, Path]
) -> None:
    """Saving a new model over a signed one leaves it unsigned until it is signed again."""
    save_artifact(trained, signed)
    assert not (signed / SIGNATURE_FILE).exists()
    with pytest.raises(ArtifactTrustError, match="no signature"):
        Predictor.load(signed, ArtifactTrust(public_key=load_public_key(keys[1])))


def test_the_signature_is_over_the_manifest_bytes(signed: Path, keys: tuple[Path, Path]) -> None:
    """model.json.sig is the raw Ed25519 signature of model.json (openssl-compatible)."""
    public = serialization.load_pem_public_key(keys[1].read_bytes())
    public.verify(  # type: ignore[union-attr, call-arg]
        (signed / SIGNATURE_FILE).read_bytes(), (signed / MANIFEST_FILE).read_bytes()
    )
    assert (
        artifact_digest(signed) == hashlib.sha256((signed / MANIFEST_FILE).read_bytes()).hexdigest()
    )


def test_only_a_valid_artifact_is_signed(signed: Path, keys: tuple[Path, Path]) -> None:
    """sign verifies the artifact first and refuses a broken one."""
    (signed / DATA_FILES[0]).write_bytes(b"broken")
    (signed / SIGNATURE_FILE).unlink()
    with pytest.raises(ArtifactError, match="the manifest says"):
        sign_artifact(signed, keys[0])
    assert not (signed / SIGNATURE_FILE).exists()


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    """The private key file is mode 0600, and keygen never overwrites a key."""
    private, public = generate_key_pair(tmp_path)
    assert (private.name, public.name) == (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE)
    assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ArtifactTrustError, match="already exists"):
        generate_key_pair(tmp_path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_unusable_public_keys_are_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """A missing file, a non-key, a private key or a non-Ed25519 key is refused clearly."""
    with pytest.raises(ArtifactTrustError, match="cannot read it"):
        load_public_key(tmp_path / "missing.pem")
    with pytest.raises(ArtifactTrustError, match="not a PEM public key"):
        load_public_key(_write(tmp_path / "junk.pem", b"hello"))
    with pytest.raises(ArtifactTrustError, match="not a PEM public key"):
        load_public_key(keys[0])
    ec_public = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ArtifactTrustError, match="not an Ed25519 public key"):
        load_public_key(_write(tmp_path / "ec.pem", ec_public))


def test_unusable_private_keys_are_refused(signed: Path, tmp_path: Path) -> None:
    """Signing with a missing, non-key or non-Ed25519 private key fails clearly."""
    with pytest.raises(ArtifactTrustError, match="cannot read it"):
        sign_artifact(signed, tmp_path / "missing.pem")
    with pytest.raises(ArtifactTrustError, match="not a PEM private key"):
        sign_artifact(signed, _write(tmp_path / "junk.pem", b"junk"))
    ec_private = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ArtifactTrustError, match="not an Ed25519 private key"):
        sign_artifact(signed, _write(tmp_path / "ec.pem", ec_private))


def test_trust_options(keys: tuple[Path, Path]) -> None:
    """No option means no check; a digest is normalised to lower case; a bad one is refused."""
    assert trust_from_options(None, None) is None
    upper = "AB" * 32
    assert trust_from_options(upper, None) == ArtifactTrust(sha256="ab" * 32)
    with_key = trust_from_options(None, keys[1])
    assert with_key is not None
    assert with_key.public_key == load_public_key(keys[1])
    with pytest.raises(ArtifactTrustError, match="64 hex digits"):
        trust_from_options("abc", None)
