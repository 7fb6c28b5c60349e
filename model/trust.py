"""Authenticity of an artifact, when the deployment asks for it: a pinned digest, a signature.

Both cover the exact bytes of ``model.json``, which lists the size and sha256 of every data
file, so they cover the whole artifact. A pin (``--model-sha256``) proves the artifact is
the one a person chose; it changes with every retraining. A signature (``model.json.sig``,
Ed25519, checked with ``--model-public-key``) proves the artifact was signed by the holder
of the private key; any artifact they sign is accepted. Neither says the model is good.

Keys are PEM files: PKCS#8 for the private key, SubjectPublicKeyInfo for the public one,
as ``article-classifier keygen`` and ``openssl genpkey -algorithm ed25519`` write them. The
signature file is the raw 64-byte Ed25519 signature, as ``openssl pkeyutl -sign -rawin``
writes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from model.errors import ArtifactTrustError

SIGNATURE_FILE = "model.json.sig"
PRIVATE_KEY_FILE = "model-signing-key.pem"
PUBLIC_KEY_FILE = "model-signing-key.pub.pem"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIGNATURE_BYTES = 64


def normalize_sha256(text: str) -> str:
    """A sha256 hex digest in lower case; ``ValueError`` if ``text`` is not one."""
    digest = text.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"must be a sha256 digest (64 hex digits), got {text!r}")
    return digest


@dataclass(frozen=True, slots=True)
class ArtifactTrust:
    """What an artifact must satisfy before it is parsed: a digest and/or a signature.

    Plain bytes and strings, so it crosses into a worker process unchanged.
    """

    sha256: str | None = None
    public_key: bytes | None = None

    def verify(self, directory: Path, manifest: bytes) -> None:
        """Raise ``ArtifactTrustError`` unless ``manifest`` (the bytes of ``model.json``)
        satisfies every check asked for."""
        if self.sha256 is not None:
            actual = hashlib.sha256(manifest).hexdigest()
            if not hmac.compare_digest(actual, self.sha256):
                raise ArtifactTrustError(
                    f"{directory}: artifact sha256 {actual} is not the pinned {self.sha256} "
                    "(--model-sha256); refusing to load it"
                )
        if self.public_key is not None:
            _verify_signature(directory, manifest, self.public_key)


def trust_from_options(sha256: str | None, public_key_file: Path | None) -> ArtifactTrust | None:
    """The trust settings of ``--model-sha256`` / ``--model-public-key``; None when neither."""
    if sha256 is None and public_key_file is None:
        return None
    key = load_public_key(public_key_file) if public_key_file is not None else None
    try:
        digest = normalize_sha256(sha256) if sha256 is not None else None
    except ValueError as error:
        raise ArtifactTrustError(f"--model-sha256 {error}") from None
    return ArtifactTrust(sha256=digest, public_key=key)


def load_public_key(path: Path) -> bytes:
    """The raw 32-byte Ed25519 public key in the PEM file ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactTrustError(
            f"--model-public-key {path}: cannot read it: {error.strerror}"
        ) from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ArtifactTrustError(
            f"--model-public-key {path}: not a PEM public key (expected an Ed25519 "
            "'BEGIN PUBLIC KEY' file, e.g. from article-classifier keygen)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactTrustError(
            f"--model-public-key {path}: a {type(key).__name__.removeprefix('_')}, "
            "not an Ed25519 public key"
        )
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the (unencrypted) PEM file ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ArtifactTrustError(f"--key {path}: cannot read it: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ArtifactTrustError(
            f"--key {path}: the key is encrypted; sign with an unencrypted key kept offline, "
            "or decrypt it into a file only the signer can read"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ArtifactTrustError(
            f"--key {path}: not a PEM private key (expected an Ed25519 "
            "'BEGIN PRIVATE KEY' file, e.g. from article-classifier keygen)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactTrustError(f"--key {path}: not an Ed25519 private key")
    return key


def sign_manifest(key: Ed25519PrivateKey, manifest: bytes) -> bytes:
    """The detached signature of the bytes of ``model.json``."""
    return key.sign(manifest)


def generate_key_pair(out_dir: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``out_dir``; returns (private, public) paths.

    The private key file is created with mode 0600 and never overwrites an existing file.
    """
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise ArtifactTrustError(f"{path} already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as error:
        raise ArtifactTrustError(f"cannot write the key pair to {out_dir}: {error}") from None
    return private_path, public_path


def _verify_signature(directory: Path, manifest: bytes, public_key: bytes) -> None:
    path = directory / SIGNATURE_FILE
    try:
        signature = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactTrustError(
            f"{directory}: no signature ({SIGNATURE_FILE}) but --model-public-key asks for "
            f"one; sign the artifact with `article-classifier sign --model {directory} "
            "--key PRIVATE.pem`"
        ) from None
    except OSError as error:
        raise ArtifactTrustError(f"{path}: cannot read it: {error.strerror}") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise ArtifactTrustError(
            f"{path}: {len(signature)} bytes, not a {_SIGNATURE_BYTES}-byte Ed25519 signature"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, manifest)
    except InvalidSignature:
        raise ArtifactTrustError(
            f"{path}: the signature does not match model.json under the configured public "
            "key; the artifact was changed after signing or signed with another key"
        ) from None
