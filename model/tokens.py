"""Tokens and character n-grams of a whole batch at once, as arrays of code points.

A batch of texts becomes one array of Unicode code points; words, tokens and n-grams are
``(start, length)`` windows into it, found with array operations, and each window is
looked up in a fixed set of terms (``TermIndex``) by a 64-bit polynomial hash whose
candidates are then compared code point by code point. No Python object is made per
token, and the array work runs in numpy without holding the interpreter lock.

What is a token is defined once, here, by the same regular expressions scikit-learn
applies (``\\w`` for a word character, ``\\s`` for a space): ``word_table`` and
``space_table`` classify every code point the way Python's ``re`` does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final

import numpy as np
from numpy.typing import NDArray

from model.errors import ModelError

IntArray = NDArray[np.int64]
_U64 = np.uint64
_MAX_CODE_POINT: Final = 0x110000
#: Joins the texts of a batch: a space and not a word character, so no token, word or
#: n-gram runs from one text into the next.
SEPARATOR: Final = "\n"
#: Odd multipliers of the hash, tried in turn until no two terms of an index share a hash.
#: Code points compared one offset at a time before the longer windows' rest in one go.
_OFFSET_LOOP: Final = 24
_MULTIPLIERS: Final = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


@cache
def _table(pattern: str) -> NDArray[np.bool_]:
    """For every code point, whether ``re`` matches ``pattern`` on it alone."""
    everything = "".join(map(chr, range(_MAX_CODE_POINT)))
    marked = re.sub(pattern, "\x01", everything)
    flags: NDArray[np.bool_] = (
        np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), dtype="<u4") == 1
    )
    flags[1] = re.fullmatch(pattern, "\x01") is not None
    flags.setflags(write=False)
    return flags


def word_table() -> NDArray[np.bool_]:
    """Code points that ``\\w`` matches (the word characters of scikit-learn's tokens)."""
    return _table(r"\w")


def space_table() -> NDArray[np.bool_]:
    """Code points that ``\\s`` matches (what ``str.split()`` splits words on)."""
    return _table(r"\s")


@dataclass(frozen=True, slots=True, eq=False)
class CodePoints:
    """A batch of texts, lowercased, as one array: text ``i`` is
    ``codes[starts[i]:starts[i + 1] - 1]`` (each text is followed by ``SEPARATOR``)."""

    codes: NDArray[np.uint32]
    starts: IntArray

    @classmethod
    def of(cls, texts: Sequence[str]) -> CodePoints:
        """The code points of ``texts``, lowercased as ``str.lower`` does."""
        lowered = [text.lower() for text in texts]
        joined = SEPARATOR.join(lowered) + SEPARATOR
        # Lone surrogates (valid in a str decoded from JSON) are kept as code points.
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        starts = np.zeros(len(lowered) + 1, dtype=np.int64)
        np.cumsum([len(text) + 1 for text in lowered], out=starts[1:])
        return cls(codes, starts)

    @property
    def n_texts(self) -> int:
        """How many texts the batch holds."""
        return int(self.starts.size - 1)

    def rows(self, positions: IntArray) -> IntArray:
        """The text each code point position belongs to."""
        found: IntArray = np.searchsorted(self.starts, positions, side="right") - 1
        return found


def runs(mask: NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
    """Starts and lengths of the maximal runs of True in ``mask``."""
    edges = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts, ends - starts


class _Powers:
    """``m**i`` and ``m**-i`` mod 2**64 for i = 0, 1, ...: computed once, up to the longest
    batch so far (a batch longer than any before extends them; the arrays are replaced,
    never changed in place, so concurrent readers each see a complete pair)."""

    __slots__ = ("_multiplier", "_tables")

    def __init__(self, multiplier: int) -> None:
        self._multiplier = multiplier
        self._tables: tuple[NDArray[np.uint64], NDArray[np.uint64]] = (
            np.ones(1, dtype=_U64),
            np.ones(1, dtype=_U64),
        )

    def upto(self, size: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        """The first ``size`` powers and inverse powers."""
        powers, inverse = self._tables
        if powers.size < size:
            grown = max(size, 2 * powers.size)
            powers = _accumulated(self._multiplier, grown)
            inverse = _accumulated(pow(self._multiplier, -1, 2**64), grown)
            self._tables = (powers, inverse)
        return powers[:size], inverse[:size]


def _accumulated(base: int, size: int) -> NDArray[np.uint64]:
    table = np.empty(size, dtype=_U64)
    table[0] = 1
    table[1:] = base
    np.multiply.accumulate(table, out=table)
    return table


class _Hasher:
    """Polynomial hashes, mod 2**64, of windows of one code-point array."""

    __slots__ = ("_inverse_powers", "_prefix")

    def __init__(
        self, codes: NDArray[np.uint32], multiplier: int, tables: _Powers | None = None
    ) -> None:
        size = codes.size
        powers, inverse = (tables or _Powers(multiplier)).upto(size + 1)
        # prefix[i] = sum of (codes[j] + 1) * m**j for j < i; a window's sum, divided by
        # m**start, is its hash wherever it starts. (+ 1: a NUL must not weigh nothing, or
        # "a" and "a\0" would share a hash.)
        prefix = np.zeros(size + 1, dtype=_U64)
        np.cumsum((codes.astype(_U64) + _U64(1)) * powers[:size], out=prefix[1:])
        self._prefix = prefix
        self._inverse_powers = inverse

    def hashes(self, starts: IntArray, lengths: IntArray) -> NDArray[np.uint64]:
        found: NDArray[np.uint64] = (
            self._prefix[starts + lengths] - self._prefix[starts]
        ) * self._inverse_powers[starts]
        return found


class TermIndex:
    """Exact lookup of code-point windows in a fixed list of distinct terms.

    ``lookup`` gives each window the position of the equal term in ``terms``, or -1. The
    terms sit in an open-addressing table keyed by their hash (no two terms share a hash:
    the index is built with the first multiplier under which none do); a window's hash
    finds its one candidate, and a comparison of lengths and code points confirms it, so
    an unknown string never passes for a term.
    """

    __slots__ = (
        "_codes",
        "_lengths",
        "_mask",
        "_multiplier",
        "_powers",
        "_probes",
        "_shift",
        "_slot_hashes",
        "_slot_terms",
        "_starts",
    )

    def __init__(self, terms: Sequence[str]) -> None:
        joined = "".join(terms)
        self._codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        self._lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        self._starts = np.cumsum(self._lengths) - self._lengths
        for multiplier in _MULTIPLIERS:
            hashes = _Hasher(self._codes, multiplier).hashes(self._starts, self._lengths)
            ranked = np.sort(hashes)
            if not (ranked[1:] == ranked[:-1]).any():
                break
        else:  # pragma: no cover - three 64-bit hash functions colliding on one vocabulary
            raise ModelError("the vocabulary's terms cannot be told apart by their hashes")
        self._multiplier = multiplier
        self._powers = _Powers(multiplier)
        # A table at most a quarter full: most lookups end at their first slot.
        bits = max(4, int(4 * len(terms)).bit_length())
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._slot_terms = np.full(1 << bits, -1, dtype=np.int32)
        self._slot_hashes = np.zeros(1 << bits, dtype=_U64)
        home = _slots(hashes, self._shift)
        pending = np.arange(len(terms))
        probes = 0
        # Linear probing, built in rounds: in round r every unplaced term tries slot
        # home + r, so no empty slot ever lies between a term's home and its slot.
        while pending.size:
            slots = (home[pending] + probes) & self._mask
            free = self._slot_terms[slots] == -1
            taken, first = np.unique(slots[free], return_index=True)
            placed = pending[free][first]
            self._slot_terms[taken] = placed
            self._slot_hashes[taken] = hashes[placed]
            pending = np.setdiff1d(pending, placed, assume_unique=True)
            probes += 1
        self._probes = probes

    def hasher(self, batch: CodePoints) -> _Hasher:
        """The hash function of this index over ``batch`` (share it between lookups)."""
        return _Hasher(batch.codes, self._multiplier, self._powers)

    def lookup(
        self, batch: CodePoints, hasher: _Hasher, starts: IntArray, lengths: IntArray
    ) -> IntArray:
        """The term of each window ``batch.codes[start:start + length]``, or -1."""
        found = np.full(starts.size, -1, dtype=np.int64)
        if not starts.size:
            return found
        hashes = hasher.hashes(starts, lengths)
        home = _slots(hashes, self._shift)
        active = np.arange(starts.size)
        for probe in range(self._probes):
            slots = (home[active] + probe) & self._mask
            terms = self._slot_terms[slots]
            hit = self._slot_hashes[slots] == hashes[active]
            hit &= terms >= 0
            found[active[hit]] = terms[hit]
            # Only an occupied slot holding another term sends a window on to the next.
            active = active[(terms >= 0) & ~hit]
            if not active.size:
                break
        candidates = np.flatnonzero(found >= 0)
        terms = found[candidates]
        same = self._lengths[terms] == lengths[candidates]
        found[candidates[~same]] = -1
        candidates, terms = candidates[same], terms[same]
        if not candidates.size:
            return found
        found[candidates[self._differs(batch.codes, starts[candidates], terms)]] = -1
        return found

    def _differs(
        self, codes: NDArray[np.uint32], starts: IntArray, terms: IntArray
    ) -> NDArray[np.bool_]:
        """Whether each window ``codes[start:start + length]`` differs from its term of
        the same length in any code point."""
        lengths = self._lengths[terms]
        term_starts = self._starts[terms]
        differs = np.zeros(terms.size, dtype=np.bool_)
        active = np.arange(terms.size)
        offset = 0
        # Offset by offset while many windows are that long (no index arrays to build)...
        while active.size > 64 and offset < _OFFSET_LOOP:
            differs[active] |= (
                codes[starts[active] + offset] != self._codes[term_starts[active] + offset]
            )
            offset += 1
            active = active[lengths[active] > offset]
        if not active.size:
            return differs
        # ...then the rest of the few longer ones, all code points at once.
        rest = lengths[active] - offset
        first = np.cumsum(rest) - rest
        ramp = np.arange(int(first[-1] + rest[-1]))
        unequal = (
            codes[ramp + np.repeat(starts[active] + offset - first, rest)]
            != (self._codes[ramp + np.repeat(term_starts[active] + offset - first, rest)])
        )
        differs[active] |= np.logical_or.reduceat(unequal, first)
        return differs


def _slots(hashes: NDArray[np.uint64], shift: np.uint64) -> IntArray:
    """The home slot of each hash: its top bits, after a finaliser (MurmurHash3's fmix64)
    has spread every bit of the polynomial hash over them."""
    mixed = hashes ^ (hashes >> np.uint64(33))
    mixed *= np.uint64(0xFF51AFD7ED558CCD)
    mixed ^= mixed >> np.uint64(33)
    mixed *= np.uint64(0xC4CEB9FE1A85EC53)
    mixed ^= mixed >> np.uint64(33)
    slots: IntArray = (mixed >> shift).astype(np.int64)
    return slots


@dataclass(frozen=True, slots=True, eq=False)
class CharGrams:
    """The character n-grams of a batch within word boundaries, as scikit-learn's
    ``char_wb`` analyser makes them: each word (a run of non-space characters) padded with
    a space on both sides, and every window of each length ``n`` in the n-gram range that
    fits in the padded word; a padded word no longer than the longest ``n`` counts once
    whole instead of its windows of that length and longer.

    ``codes`` holds the padded words one after the other; gram ``k`` is
    ``codes[starts[k]:starts[k] + lengths[k]]`` of text ``rows[k]``, grams ordered by
    length, then by position.
    """

    codes: NDArray[np.uint32]
    starts: IntArray
    lengths: IntArray
    rows: IntArray

    @classmethod
    def of(cls, batch: CodePoints, ngram_min: int, ngram_max: int) -> CharGrams:
        """The grams of ``batch`` of lengths ``ngram_min`` to ``ngram_max``."""
        word_starts, word_lengths = runs(~space_table()[batch.codes])
        word_rows = batch.rows(word_starts)
        padded = word_lengths + 2
        padded_starts = np.cumsum(padded) - padded
        codes = np.full(int(padded.sum()), ord(" "), dtype=np.uint32)
        inside = np.cumsum(word_lengths) - word_lengths
        ramp = np.arange(int(word_lengths.sum()))
        codes[ramp + np.repeat(padded_starts + 1 - inside, word_lengths)] = batch.codes[
            ramp + np.repeat(word_starts - inside, word_lengths)
        ]
        starts, lengths, rows = [], [], []
        for n in range(ngram_min, ngram_max + 1):
            longer = padded > n
            count = padded[longer] - n + 1
            first = np.cumsum(count) - count
            offsets = np.arange(int(count.sum())) - np.repeat(first, count)
            starts.append(np.repeat(padded_starts[longer], count) + offsets)
            lengths.append(np.full(offsets.size, n, dtype=np.int64))
            rows.append(np.repeat(word_rows[longer], count))
        whole = padded <= ngram_max
        starts.append(padded_starts[whole])
        lengths.append(padded[whole])
        rows.append(word_rows[whole])
        return cls(codes, np.concatenate(starts), np.concatenate(lengths), np.concatenate(rows))

    def as_batch(self) -> CodePoints:
        """The padded words as a batch of one text, for looking grams up."""
        return CodePoints(self.codes, np.array([0, self.codes.size], dtype=np.int64))
