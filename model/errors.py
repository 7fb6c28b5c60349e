"""The exceptions the model package raises: one root, one subclass per failure domain."""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error raised by the model package."""


class CorpusError(ModelError):
    """A labelled corpus file is missing or holds an invalid line."""


class TrainingError(ModelError):
    """The labelled records cannot train a model (e.g. too few records for a head)."""


class ArtifactError(ModelError):
    """A model artifact cannot be written, or is refused on load (tampered, malformed, ...)."""


class ArtifactTrustError(ArtifactError):
    """The artifact is not the one the deployment trusts: a pinned digest or a signature
    does not match, the signature is missing, or the key cannot be used."""
