"""The models a classifier holds, how they are verified, loaded and smoke-tested.

A ``ModelSpec`` says which artifacts to load (the live model and, with ``--shadow-model``,
a candidate) and what each must satisfy (``model.trust.ArtifactTrust``). ``load_models``
loads and verifies them, then smoke-tests each: the sample articles shipped with the
package (``model/samples/articles.jsonl``) go through the service's own per-record path,
and every one must come out as a valid classified event of that model. It runs where the
model lives (a loader thread, or the worker process), never on the batch path.

``TrustPolicy`` is the deployment's rule, applied the same way at start and at every swap:

- ``--model-public-key``: any artifact signed with the key is accepted, at start and on
  swaps (the candidate too).
- ``--model-sha256``: pins ONE artifact. A swap to any other artifact is refused (the old
  model keeps serving); a swap back to the same bytes is accepted.
- ``--model-sha256-file``: the accepted digests, one per line, read again at every load,
  so the release pipeline adds the new digest and then flips the model (the old digest
  can stay listed for a rollback). The candidate's digest must be listed too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from model.artifact import MANIFEST_FILE, artifact_digest
from model.errors import ArtifactError, ArtifactTrustError, ModelError
from model.trust import ArtifactTrust, normalize_sha256
from schemas import DEFAULT_LIMITS, DEFAULT_MAX_EVENT_BYTES, ClassifiedArticleEvent
from service.core.classify import classify_values
from service.core.records import ArticlePredictor, Classified
from service.core.shadow import CandidateScorer

#: Sample articles each new model must classify before it serves (at most this many).
SMOKE_TEST_ARTICLES = 8
_COMMENT = re.compile(r"\s*(#.*)?$")


class SmokeTestError(ModelError):
    """A model that loaded and verified fails on the built-in sample articles."""


class ModelIdentity(NamedTuple):
    name: str
    version: str
    #: sha256 of the artifact's model.json (None for a model given in memory).
    sha256: str | None = None
    #: The sections it can predict (empty when the predictor does not say).
    sections: tuple[str, ...] = ()


class ModelSetIdentity(NamedTuple):
    """The live model and the candidate (None without ``--shadow-model``); with models per
    language, ``primary`` is the default model and ``languages`` the others by language."""

    primary: ModelIdentity
    shadow: ModelIdentity | None = None
    languages: tuple[tuple[str, ModelIdentity], ...] = ()


@dataclass(frozen=True, slots=True)
class LanguageModel:
    """The model of one language (``--model de=DIR``) and what its artifact must satisfy."""

    language: str
    directory: Path
    trust: ArtifactTrust | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a classifier loads: plain paths and bytes, so it crosses into a worker process."""

    primary: Path
    trust: ArtifactTrust | None = None
    shadow: Path | None = None
    shadow_trust: ArtifactTrust | None = None
    shadow_topic: str | None = None
    #: The language whose model the candidate is compared with (``--shadow-model de=DIR``);
    #: None: every article, against whichever model answered it.
    shadow_language: str | None = None
    #: ``--section-floor``: sections scored under it are flagged uncertain (every model).
    section_floor: float | None = None
    #: The models per language (``--model de=DIR``); ``primary`` is then the default one.
    languages: tuple[LanguageModel, ...] = ()

    def pinned(self, loaded: ModelSetIdentity) -> ModelSpec:
        """This spec, bound to the exact artifacts that were loaded: a replacement worker
        process loads them again, and must not get whatever the directories hold by then."""
        shadow_sha = loaded.shadow.sha256 if loaded.shadow else None
        digests = {language: identity.sha256 for language, identity in loaded.languages}
        return replace(
            self,
            trust=_pin(self.trust, loaded.primary.sha256),
            shadow_trust=_pin(self.shadow_trust, shadow_sha) if self.shadow else None,
            languages=tuple(
                replace(model, trust=_pin(model.trust, digests.get(model.language)))
                for model in self.languages
            ),
        )


@dataclass(frozen=True, slots=True)
class LoadedModels:
    """The live predictor and the candidate's scorer, as a classifier holds them."""

    primary: ArticlePredictor
    shadow: CandidateScorer | None = None

    @property
    def identity(self) -> ModelSetIdentity:
        candidate = identity_of(self.shadow.candidate) if self.shadow else None
        languages = tuple(
            (language, identity_of(model))
            for language, model in getattr(self.primary, "languages", ())
        )
        return ModelSetIdentity(identity_of(self.primary), candidate, languages)


def identity_of(predictor: ArticlePredictor) -> ModelIdentity:
    sha256: str | None = getattr(predictor, "artifact_sha256", None)
    sections: tuple[str, ...] = tuple(getattr(predictor, "sections", ()))
    return ModelIdentity(predictor.name, predictor.version, sha256, sections)


#: A loaded model by the (directory, trust) a spec named it with.
ModelKey = tuple[Path, ArtifactTrust | None]


@dataclass(frozen=True, slots=True)
class Reusable:
    """Models a swap may keep instead of loading them again: each serving model by the
    (directory, trust) of the serving spec, which pins it to its bytes, and the language
    detector (``reusable``)."""

    predictors: dict[ModelKey, ArticlePredictor]
    detector: object | None = None


def reusable(spec: ModelSpec, serving: ArticlePredictor) -> Reusable:
    """What ``serving`` (loaded from ``spec``) offers a swap: its default model and each
    language's. A swap that names a model with the same directory and the same pinned
    trust keeps it (``load_models``)."""
    default: ArticlePredictor = getattr(serving, "default", serving)
    predictors: dict[ModelKey, ArticlePredictor] = {(spec.primary, spec.trust): default}
    by_language = dict(getattr(serving, "languages", ()))
    for model in spec.languages:
        if model.language in by_language:
            predictors[(model.directory, model.trust)] = by_language[model.language]
    return Reusable(predictors, getattr(serving, "detector", None))


def load_models(
    spec: ModelSpec, primary: ArticlePredictor | None = None, reuse: Reusable | None = None
) -> LoadedModels:
    """Load, verify and smoke-test what ``spec`` names (``primary``, if given, is used
    instead of loading ``spec.primary``; a model ``reuse`` holds under the same directory
    and trust is kept, not loaded again). Raises ``ModelError`` (``ArtifactTrustError``,
    ``ArtifactError``, ``SmokeTestError``) naming the artifact and the problem."""
    reuse = reuse or Reusable({})
    if primary is None:
        primary = reuse.predictors.get((spec.primary, spec.trust))
    if primary is None:
        primary = load_predictor(spec.primary, spec.trust, section_floor=spec.section_floor)
        smoke_test(primary, spec.primary)
    if spec.languages and not hasattr(primary, "languages"):
        primary = _routed(spec, primary, reuse)
    scorer = None
    if spec.shadow is not None:
        candidate = load_predictor(spec.shadow, spec.shadow_trust, section_floor=spec.section_floor)
        smoke_test(candidate, spec.shadow)
        scorer = CandidateScorer(candidate, topic=spec.shadow_topic, language=spec.shadow_language)
    return LoadedModels(primary, scorer)


def load_predictor(
    directory: Path, trust: ArtifactTrust | None, *, section_floor: float | None = None
) -> ArticlePredictor:
    from model import Predictor  # noqa: PLC0415 - only where the model lives

    predictor: ArticlePredictor = Predictor.load(directory, trust, section_floor=section_floor)
    return predictor


def smoke_test(predictor: ArticlePredictor, directory: Path | None = None) -> None:
    """Raise ``SmokeTestError`` unless every sample article comes out classified by this
    model, as a valid output event (the service's own decode -> predict -> encode path)."""
    where = f"{directory}: " if directory is not None else ""
    values = sample_values()
    try:
        outcomes = classify_values(
            values, predictor, max_event_bytes=DEFAULT_MAX_EVENT_BYTES, limits=DEFAULT_LIMITS
        )
    except MemoryError:
        raise
    except Exception as error:
        raise SmokeTestError(
            f"{where}smoke test failed: the model raised {type(error).__name__} on the "
            f"{len(values)} sample articles"
        ) from None
    for number, outcome in enumerate(outcomes, 1):
        if not isinstance(outcome, Classified):
            raise SmokeTestError(
                f"{where}smoke test failed on sample article {number} of {len(values)}: "
                f"{outcome.message}"
            )
        model = ClassifiedArticleEvent.model_validate_json(outcome.value).classification.model
        if model.version != predictor.version:
            raise SmokeTestError(
                f"{where}smoke test failed: output says model version {model.version!r}, "
                f"the model is {predictor.version!r}"
            )


def _routed(spec: ModelSpec, default: ArticlePredictor, reuse: Reusable) -> ArticlePredictor:
    """The default model and one model per language behind one predictor that routes each
    article by its language; a directory listed twice (with the same trust) loads once,
    and a model (or detector) ``reuse`` holds is kept."""
    from model import Predictor  # noqa: PLC0415 - only where the model lives
    from model.languages import LanguageDetector, RoutedPredictor  # noqa: PLC0415

    if not isinstance(default, Predictor):
        raise ModelError("models per language need the default model loaded from an artifact")
    loaded: dict[ModelKey, Predictor] = {(spec.primary.resolve(), spec.trust): default}
    by_language: dict[str, Predictor] = {}
    for model in spec.languages:
        key = (model.directory.resolve(), model.trust)
        kept = reuse.predictors.get((model.directory, model.trust))
        predictor = kept if isinstance(kept, Predictor) else loaded.get(key)
        if predictor is None:
            predictor = Predictor.load(
                model.directory, model.trust, section_floor=spec.section_floor
            )
            smoke_test(predictor, model.directory)
        loaded[key] = predictor
        by_language[model.language] = predictor
    detector = reuse.detector
    if not isinstance(detector, LanguageDetector) or set(detector.languages) != set(by_language):
        detector = None
    routed: ArticlePredictor = RoutedPredictor(default, by_language, detector)
    return routed


@cache
def sample_values() -> tuple[bytes, ...]:
    """The first sample articles shipped as package data, as raw event values."""
    text = resources.files("model").joinpath("samples/articles.jsonl").read_bytes()
    lines = [line for line in text.splitlines() if line.strip()]
    return tuple(lines[:SMOKE_TEST_ARTICLES])


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """The deployment's trust rule (module docstring); evaluated at every load."""

    sha256: str | None = None
    sha256_file: Path | None = None
    public_key: bytes | None = None

    def for_model(self, directory: Path) -> ArtifactTrust | None:
        """What the live model's artifact in ``directory`` must satisfy."""
        if self.sha256_file is not None:
            return self._listed(directory, self.sha256_file)
        if self.sha256 is None and self.public_key is None:
            return None
        return ArtifactTrust(sha256=self.sha256, public_key=self.public_key)

    def for_candidate(self, directory: Path) -> ArtifactTrust | None:
        """What the candidate's artifact must satisfy: the same, except that a single
        ``--model-sha256`` names the live artifact only (a candidate is never served)."""
        if self.sha256_file is not None:
            return self._listed(directory, self.sha256_file)
        return ArtifactTrust(public_key=self.public_key) if self.public_key else None

    def _listed(self, directory: Path, pin_file: Path) -> ArtifactTrust:
        accepted = read_pin_file(pin_file)
        digest = artifact_digest(directory)
        if digest not in accepted:
            raise ArtifactTrustError(
                f"{directory}: artifact sha256 {digest} is not listed in {pin_file} "
                "(--model-sha256-file); refusing to load it"
            )
        # The load verifies the bytes it reads against this digest: a change in between
        # is refused, not loaded.
        return ArtifactTrust(sha256=digest, public_key=self.public_key)


def read_pin_file(path: Path) -> frozenset[str]:
    """The sha256 digests listed in ``path``: one per line, ``#`` comments and blank lines
    ignored. Raises ``ArtifactTrustError`` naming the file (and line) when unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        detail = getattr(error, "strerror", None) or type(error).__name__
        raise ArtifactTrustError(f"--model-sha256-file {path}: cannot read it: {detail}") from None
    digests: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if _COMMENT.fullmatch(line):
            continue
        try:
            digests.add(normalize_sha256(line.split("#", 1)[0]))
        except ValueError as error:
            raise ArtifactTrustError(f"--model-sha256-file {path}:{number}: {error}") from None
    if not digests:
        raise ArtifactTrustError(f"--model-sha256-file {path}: lists no sha256 digest")
    return frozenset(digests)


class Fingerprint(NamedTuple):
    """What identifies the artifact a path points to, cheaply: the resolved directory and
    the sha256 of its ``model.json`` bytes (None while it cannot be read)."""

    path: Path
    sha256: str | None


def fingerprint(path: Path) -> Fingerprint:
    """The artifact ``path`` points to now (a directory, or a symlink to one)."""
    resolved = Path(path).resolve()
    try:
        digest = hashlib.sha256((resolved / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        digest = None
    return Fingerprint(resolved, digest)


def pin_file_digest(path: Path | None) -> str | None:
    """The sha256 of the pin file's bytes (a changed list may make a refused swap pass)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _pin(trust: ArtifactTrust | None, sha256: str | None) -> ArtifactTrust | None:
    if sha256 is None:
        return trust
    return ArtifactTrust(sha256=sha256, public_key=trust.public_key if trust else None)


__all__ = [
    "ArtifactError",
    "Fingerprint",
    "LanguageModel",
    "LoadedModels",
    "ModelIdentity",
    "ModelSetIdentity",
    "ModelSpec",
    "SmokeTestError",
    "TrustPolicy",
    "fingerprint",
    "load_models",
    "read_pin_file",
    "smoke_test",
]
