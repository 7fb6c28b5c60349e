"""One model per language: each article goes to the model of its language.

The language is the primary subtag of the article's ``language`` field (``de-AT`` -> ``de``).
An article without one is given to a compiled detector (lingua) restricted to the configured
languages, built once with its language models loaded. An article whose language has no
model, or whose language the detector cannot tell, goes to the default model: it is never
dropped, and the prediction says why (``FALLBACK_NO_MODEL``, ``FALLBACK_UNDETECTED``).

The detector only chooses among the configured languages: an article in the default model's
language is told apart only if that language is configured too (``--model en=DIR`` beside
``--model DIR``; the same directory is loaded once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from model.baseline import TrainingBaseline
from model.predictor import DEFAULT_MODEL_KEY, BatchPrediction, Predictor
from model.text import HasTitleAndBody
from schemas import Classification

#: The key of the model that answers every article no language model takes.
DEFAULT_LANGUAGE = DEFAULT_MODEL_KEY
#: Why an article went to the default model.
FALLBACK_NO_MODEL = "no_model"
FALLBACK_UNDETECTED = "undetected"
#: Characters of an article the detector reads (title, then the start of the body): enough
#: to tell languages apart, and a bound on its cost for a long article.
DETECT_CHARS = 200
_SUBTAG = re.compile(r"[a-z]{2,3}")


class HasLanguage(HasTitleAndBody, Protocol):
    """An article that may say its language (``schemas.ArticleEvent`` does)."""

    @property
    def language(self) -> str | None: ...


def primary_subtag(tag: str | None) -> str | None:
    """The primary language subtag of a BCP 47 tag in lower case (``de-AT`` -> ``de``), or
    None when there is none (missing, empty, or not 2-3 letters)."""
    if not tag:
        return None
    subtag = tag.strip().split("-", 1)[0].split("_", 1)[0].lower()
    return subtag if _SUBTAG.fullmatch(subtag) else None


def language_key(text: str) -> str:
    """A configured language as routing keys it: its primary subtag; ValueError otherwise."""
    subtag = primary_subtag(text)
    if subtag is None or subtag != text.strip().lower():
        raise ValueError(f"{text!r} is not a language code (two or three letters, e.g. de)")
    return subtag


class LanguageDetector:
    """lingua's detector restricted to ``languages`` (ISO 639-1 or 639-3 codes), built once
    with its language models loaded, so the first batch pays nothing extra."""

    def __init__(self, languages: Iterable[str]) -> None:
        from lingua import (  # noqa: PLC0415 - only where routing is configured
            IsoCode639_1,
            IsoCode639_3,
            Language,
            LanguageDetectorBuilder,
        )

        by_lingua: dict[Any, str] = {}
        for code in sorted(set(languages)):
            try:
                iso: Any = (
                    IsoCode639_1.from_str(code) if len(code) == 2 else IsoCode639_3.from_str(code)
                )
                language = (
                    Language.from_iso_code_639_1(iso)
                    if len(code) == 2
                    else Language.from_iso_code_639_3(iso)
                )
            except ValueError:
                raise ValueError(f"the language detector knows no language {code!r}") from None
            by_lingua[language] = code
        if not by_lingua:
            raise ValueError("a language detector needs at least one language")
        self.languages = tuple(sorted(by_lingua.values()))
        self._codes = by_lingua
        self._detector = (
            LanguageDetectorBuilder.from_languages(*by_lingua)
            .with_preloaded_language_models()
            .build()
        )

    def detect(self, texts: Sequence[str]) -> list[str | None]:
        """The configured language of each text, or None where it cannot tell."""
        codes = self._codes
        detect = self._detector.detect_language_of
        found = [detect(text) for text in texts]
        return [None if language is None else codes.get(language) for language in found]


def detection_text(article: HasTitleAndBody) -> str:
    """What the detector reads of an article: its title and the start of its body."""
    return f"{article.title}\n{article.body[:DETECT_CHARS]}"


class RoutedPredictor:
    """Predicts each article with the model of its language (module docstring); offers what
    ``Predictor`` offers, its identity and drift baseline being the default model's."""

    __slots__ = ("_by_language", "_default", "_detector", "baselines", "languages")

    def __init__(
        self,
        default: Predictor,
        by_language: Mapping[str, Predictor],
        detector: LanguageDetector | None = None,
    ) -> None:
        self._default = default
        self._by_language = dict(by_language)
        #: The configured languages, and the model answering each.
        self.languages: tuple[tuple[str, Predictor], ...] = tuple(sorted(self._by_language.items()))
        #: The training baseline of each model, by its key (a language, or ``default``).
        self.baselines: Mapping[str, TrainingBaseline] = {
            DEFAULT_LANGUAGE: default.baseline,
            **{language: model.baseline for language, model in self.languages},
        }
        if detector is None and self._by_language:
            detector = LanguageDetector(self._by_language)
        self._detector = detector

    @property
    def default(self) -> Predictor:
        """The model of articles no language model takes."""
        return self._default

    @property
    def detector(self) -> LanguageDetector | None:
        """The detector of articles without a language field (None without languages)."""
        return self._detector

    @property
    def name(self) -> str:
        return self._default.name

    @property
    def version(self) -> str:
        return self._default.version

    @property
    def artifact_sha256(self) -> str | None:
        return self._default.artifact_sha256

    @property
    def sections(self) -> tuple[str, ...]:
        return self._default.sections

    @property
    def baseline(self) -> TrainingBaseline:
        return self._default.baseline

    def route(self, articles: Sequence[HasTitleAndBody]) -> tuple[list[str], list[str | None]]:
        """Each article's model key (a language, or ``DEFAULT_LANGUAGE``) and, for one that
        went to the default model for want of a language model, why."""
        keys: list[str] = []
        fallbacks: list[str | None] = []
        undetected: list[int] = []
        models = self._by_language
        for index, article in enumerate(articles):
            subtag = primary_subtag(getattr(article, "language", None))
            if subtag is None:
                undetected.append(index)
                keys.append(DEFAULT_LANGUAGE)
                fallbacks.append(None)
            elif subtag in models:
                keys.append(subtag)
                fallbacks.append(None)
            else:
                keys.append(DEFAULT_LANGUAGE)
                fallbacks.append(FALLBACK_NO_MODEL)
        if undetected and self._detector is not None:
            found = self._detector.detect([detection_text(articles[i]) for i in undetected])
            for index, language in zip(undetected, found, strict=True):
                if language is None:
                    fallbacks[index] = FALLBACK_UNDETECTED
                else:
                    keys[index] = language
        elif undetected:
            for index in undetected:
                fallbacks[index] = FALLBACK_UNDETECTED
        return keys, fallbacks

    def predict(self, articles: Sequence[HasTitleAndBody]) -> list[Classification]:
        """One classification per article, in order, each by its language's model."""
        return self.predict_batch(articles).classifications

    def predict_batch(
        self, articles: Sequence[HasTitleAndBody], *, explain: int = 0
    ) -> BatchPrediction:
        """``Predictor.predict_batch`` per language, merged back into input order; the
        result also says each article's model key and fallback reason."""
        if not articles:
            return BatchPrediction([], [], [])
        keys, fallbacks = self.route(articles)
        groups: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        n = len(articles)
        classifications: list[Classification | None] = [None] * n
        tokens = [0] * n
        unknown = [0] * n
        uncertain = 0
        for key, indexes in groups.items():
            model = self._default if key == DEFAULT_LANGUAGE else self._by_language[key]
            part = model.predict_batch([articles[i] for i in indexes], explain=explain)
            uncertain += part.uncertain
            for position, index in enumerate(indexes):
                classifications[index] = part.classifications[position]
                tokens[index] = part.tokens[position]
                unknown[index] = part.unknown_tokens[position]
        done = [c for c in classifications if c is not None]
        return BatchPrediction(done, tokens, unknown, uncertain, keys, fallbacks)
