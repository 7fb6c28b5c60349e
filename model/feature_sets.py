"""The feature sets a model can be trained on: words, character n-grams, or both.

``word``: the word TF-IDF of ``model.features``; ``char``: the character n-grams within
word boundaries of ``model.char_features``; ``word+char``: both blocks side by side, the
word columns first, each block L2-normalised and scaled by ``sqrt(1/2)`` so that a row
still has unit norm (and the SVMs' regularisation means the same as with one block).
``TextFeatures`` is the training side (scikit-learn vectorisers), ``CompiledFeatures`` the
inference side (plain data); they agree column for column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal, get_args

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from model.char_features import CompiledCharVectorizer, export_char_fitted, make_char_vectorizer
from model.errors import ModelError
from model.features import CompiledVectorizer, CountedFeatures, export_fitted, make_vectorizer

FeatureSet = Literal["word", "char", "word+char"]
FEATURE_SETS: Final[tuple[FeatureSet, ...]] = get_args(FeatureSet)


def block_weight(features: FeatureSet) -> float:
    """The factor each block's L2-normalised rows are scaled by."""
    return math.sqrt(0.5) if features == "word+char" else 1.0


def uses_words(features: FeatureSet) -> bool:
    """Whether the feature set has the word block."""
    return features != "char"


def uses_chars(features: FeatureSet) -> bool:
    """Whether the feature set has the character n-gram block."""
    return features != "word"


def check_feature_set(value: object) -> FeatureSet:
    """``value`` as a feature set, or a ``ModelError`` naming the choices."""
    for known in FEATURE_SETS:
        if value == known:
            return known
    raise ModelError(f"features must be one of {', '.join(FEATURE_SETS)}; got {value!r}")


class TextFeatures:
    """The training side: fits the chosen blocks' vectorisers, transforms texts to float64
    CSR rows (words first, then character n-grams)."""

    def __init__(
        self,
        features: FeatureSet,
        *,
        ngram_max: int,
        min_df: int,
        max_df: float,
        char_ngram_min: int,
        char_ngram_max: int,
        char_min_df: int,
    ) -> None:
        self.features = check_feature_set(features)
        self.word: TfidfVectorizer | None = (
            make_vectorizer(ngram_max=ngram_max, min_df=min_df, max_df=max_df)
            if uses_words(features)
            else None
        )
        self.char: TfidfVectorizer | None = (
            make_char_vectorizer(
                ngram_min=char_ngram_min,
                ngram_max=char_ngram_max,
                min_df=char_min_df,
                max_df=max_df,
            )
            if uses_chars(features)
            else None
        )

    def _blocks(self) -> list[TfidfVectorizer]:
        return [block for block in (self.word, self.char) if block is not None]

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Fit every block on ``texts`` and return their rows."""
        return self._joined([block.fit_transform(texts) for block in self._blocks()])

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The rows of ``texts`` with the fitted blocks."""
        return self._joined([block.transform(texts) for block in self._blocks()])

    def _joined(self, blocks: list[sp.spmatrix]) -> sp.csr_matrix:
        weight = block_weight(self.features)
        scaled = [sp.csr_matrix(block, dtype=np.float64) * weight for block in blocks]
        return sp.csr_matrix(sp.hstack(scaled, format="csr"))

    def export(
        self,
    ) -> tuple[tuple[str, ...], NDArray[np.float32], int, tuple[str, ...], int, int]:
        """Plain data: word terms, idf of every column (words, then n-grams), word n-gram
        length, character n-grams, shortest and longest character n-gram."""
        words: tuple[str, ...] = ()
        idf = [np.zeros(0, dtype=np.float32)]
        ngram_max, char_min, char_max = 1, 0, 0
        grams: tuple[str, ...] = ()
        if self.word is not None:
            words, word_idf, ngram_max = export_fitted(self.word)
            idf.append(word_idf)
        if self.char is not None:
            grams, char_idf, char_min, char_max = export_char_fitted(self.char)
            idf.append(char_idf)
        return words, np.concatenate(idf), ngram_max, grams, char_min, char_max


class CompiledFeatures:
    """The inference side: TF-IDF rows of a batch from plain data, read-only.

    Token counts are the word block's (``model.features``); a model with character
    n-grams alone counts n-grams instead (``model.char_features``).
    """

    __slots__ = ("_chars", "_n_features", "_weight", "_words")

    def __init__(
        self,
        features: FeatureSet,
        *,
        vocabulary: Sequence[str],
        idf: NDArray[np.float32],
        ngram_max: int,
        char_vocabulary: Sequence[str],
        char_ngram_min: int,
        char_ngram_max: int,
    ) -> None:
        features = check_feature_set(features)
        n_words = len(vocabulary)
        if idf.shape[0] != n_words + len(char_vocabulary):
            raise ModelError(
                f"{n_words} words and {len(char_vocabulary)} character n-grams but "
                f"{idf.shape[0]} idf values"
            )
        if not uses_words(features) and n_words:
            raise ModelError("a model of character n-grams alone has no word vocabulary")
        if not uses_chars(features) and char_vocabulary:
            raise ModelError("a model of words alone has no character n-grams")
        self._words = (
            CompiledVectorizer(vocabulary, idf[:n_words], ngram_max)
            if uses_words(features)
            else None
        )
        self._chars = (
            CompiledCharVectorizer(char_vocabulary, idf[n_words:], char_ngram_min, char_ngram_max)
            if uses_chars(features)
            else None
        )
        self._weight = np.float32(block_weight(features))
        self._n_features = int(idf.shape[0])

    @property
    def n_features(self) -> int:
        """Width of the feature space (both blocks)."""
        return self._n_features

    @property
    def words(self) -> CompiledVectorizer | None:
        """The word block, if the feature set has it."""
        return self._words

    @property
    def chars(self) -> CompiledCharVectorizer | None:
        """The character n-gram block, if the feature set has it."""
        return self._chars

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF rows (float32 CSR), equal to ``TextFeatures.transform``'s."""
        return self.transform_counted(texts).matrix

    def transform_counted(self, texts: Sequence[str]) -> CountedFeatures:
        """The rows of ``texts`` and their token counts."""
        if self._chars is None:
            assert self._words is not None
            return self._words.transform_counted(texts)
        chars = self._chars.transform_counted(texts)
        if self._words is None:
            return chars
        words = self._words.transform_counted(texts)
        matrix = sp.csr_matrix(
            sp.hstack([words.matrix, chars.matrix], format="csr"), dtype=np.float32
        )
        matrix.data *= self._weight
        return CountedFeatures(matrix, words.tokens, words.unknown_tokens)
