"""How a ``LinearTextModel`` is stored as data that cannot carry code, and read back.

Two files: ``arrays.npz``, a zip of ``.npy`` arrays as ``numpy.savez_compressed`` writes
them (read here with each header checked before its data, and never with pickle), and
``params.json`` (labels, vocabulary, scalars and the fixed feature settings; a model with
character n-grams adds its feature set, n-grams and their lengths, which a model of words
alone leaves out, so its files are exactly what they were before character n-grams, and
older versions load it). Every field
of ``LinearTextModel`` is stored by exactly one of ``ARRAYS`` (numeric arrays, with dtype
and shape) or ``Params`` (everything else): a new field goes into one of them, and
``tests/test_model_artifact.py`` fails until it does.

Reading validates everything a predictor relies on (member names, dtypes, shapes against
the label and vocabulary counts, finite values, unique terms) and raises ``ArtifactError``
naming the file and the problem; it never builds a model from doubtful data.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Annotated, Any, Literal

import numpy as np
from numpy.lib import format as npy
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.char_features import MAX_CHAR_NGRAM
from model.errors import ArtifactError
from model.feature_sets import uses_chars, uses_words
from model.features import TOKEN_PATTERN
from model.inference import LinearTextModel

ARRAYS_FILE = "arrays.npz"
PARAMS_FILE = "params.json"
DATA_FILES = (ARRAYS_FILE, PARAMS_FILE)

#: Most bytes the arrays may need once decompressed (the research model's need about 10 MiB).
MAX_ARRAY_BYTES = 2**30
#: A fixed zip timestamp: the same model always gives the same bytes (and sha256).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """A stored array: its dtype (exact, little-endian) and its shape in named dimensions."""

    dtype: np.dtype[Any]
    dims: tuple[str, ...]


_F32 = np.dtype("<f4")

#: Every numeric array of ``LinearTextModel``. Dimensions: ``features`` (words plus
#: character n-grams), ``sections``, ``tags`` and ``labels`` (sections + tags).
ARRAYS: Mapping[str, ArraySpec] = {
    "idf": ArraySpec(_F32, ("features",)),
    "weights": ArraySpec(_F32, ("features", "labels")),
    "bias": ArraySpec(_F32, ("labels",)),
    "tag_thresholds": ArraySpec(_F32, ("tags",)),
}

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Params(BaseModel):
    """``params.json``: every non-array field of ``LinearTextModel``, plus the fixed
    feature settings the stored vocabulary and idf were computed with."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    token_pattern: str
    lowercase: bool
    sublinear_tf: bool
    norm: str
    ngram_max: Annotated[int, Field(ge=1, le=10)]
    vocabulary: list[Annotated[str, Field(min_length=1)]]
    sections: list[Annotated[str, Field(min_length=1)]]
    tags: list[Annotated[str, Field(min_length=1)]]
    title_repeats: Annotated[int, Field(ge=0, le=100)]
    section_temperature: Annotated[FiniteFloat, Field(gt=0)]
    tag_slope: Annotated[FiniteFloat, Field(gt=0)]
    features: Literal["word", "char", "word+char"] = "word"
    char_vocabulary: list[Annotated[str, Field(min_length=1)]] = []
    char_ngram_min: Annotated[int, Field(ge=0, le=MAX_CHAR_NGRAM)] = 0
    char_ngram_max: Annotated[int, Field(ge=0, le=MAX_CHAR_NGRAM)] = 0

    @model_validator(mode="after")
    def _blocks_match_the_feature_set(self) -> Params:
        if not uses_words(self.features) and self.vocabulary:
            raise ValueError("a model of character n-grams alone has no word vocabulary")
        if uses_chars(self.features):
            if not 1 <= self.char_ngram_min <= self.char_ngram_max:
                raise ValueError("character n-gram lengths must be 1 <= min <= max")
        elif self.char_vocabulary or self.char_ngram_min or self.char_ngram_max:
            raise ValueError("a model of words alone has no character n-grams")
        return self

    @field_validator("token_pattern")
    @classmethod
    def _supported_pattern(cls, value: str) -> str:
        if value != TOKEN_PATTERN:
            raise ValueError(f"must be {TOKEN_PATTERN!r}, the only tokeniser inference has")
        return value

    @field_validator("lowercase", "sublinear_tf")
    @classmethod
    def _must_be_true(cls, value: bool) -> bool:
        if not value:
            raise ValueError("must be true, the only setting inference reproduces")
        return value

    @field_validator("norm")
    @classmethod
    def _l2(cls, value: str) -> str:
        if value != "l2":
            raise ValueError("must be 'l2', the only norm inference applies")
        return value

    @field_validator("vocabulary", "sections", "tags", "char_vocabulary")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("repeats an entry")
        return value


#: Fields of ``Params`` that are settings, not ``LinearTextModel`` fields.
_SETTINGS = {"token_pattern": TOKEN_PATTERN, "lowercase": True, "sublinear_tf": True, "norm": "l2"}
_TUPLE_FIELDS = ("vocabulary", "sections", "tags", "char_vocabulary")
#: The fields a model of words alone leaves out of ``params.json``.
_CHAR_FIELDS = {"features", "char_vocabulary", "char_ngram_min", "char_ngram_max"}


def encode(model: LinearTextModel) -> dict[str, bytes]:
    """The data files of ``model``: file name -> exact bytes."""
    return {ARRAYS_FILE: _encode_arrays(model), PARAMS_FILE: _encode_params(model)}


def decode(files: Mapping[str, bytes]) -> LinearTextModel:
    """The model stored in ``files`` (as ``encode`` wrote them), validated in full."""
    params = _decode_params(files[PARAMS_FILE])
    dims = {
        "features": len(params.vocabulary) + len(params.char_vocabulary),
        "sections": len(params.sections),
        "tags": len(params.tags),
        "labels": len(params.sections) + len(params.tags),
    }
    arrays = _decode_arrays(files[ARRAYS_FILE], dims)
    fields: dict[str, Any] = params.model_dump(exclude=set(_SETTINGS))
    for name in _TUPLE_FIELDS:
        fields[name] = tuple(fields[name])
    return LinearTextModel(**fields, **arrays)


# -- arrays.npz ---------------------------------------------------------------------------


def _encode_arrays(model: LinearTextModel) -> bytes:
    buffer = io.BytesIO()
    # Deflated: a third of the raw size for a large model, for about 0.2 s more to load it.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, spec in ARRAYS.items():
            array = np.ascontiguousarray(getattr(model, name), dtype=spec.dtype)
            member = io.BytesIO()
            npy.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _decode_arrays(data: bytes, dims: Mapping[str, int]) -> dict[str, Any]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception as error:  # any failure to parse untrusted bytes is a refusal
        raise ArtifactError(f"{ARRAYS_FILE}: not a valid npz (zip) file: {error}") from None
    with archive:
        names = archive.namelist()
        expected = {f"{name}.npy" for name in ARRAYS}
        if len(names) != len(set(names)):
            raise ArtifactError(f"{ARRAYS_FILE}: an array is stored twice")
        if missing := sorted(expected - set(names)):
            raise ArtifactError(f"{ARRAYS_FILE}: missing array(s) {', '.join(missing)}")
        if extra := sorted(set(names) - expected):
            raise ArtifactError(f"{ARRAYS_FILE}: unexpected member(s) {', '.join(extra)}")
        _check_array_bytes(dims)
        return {
            name: _read_member(archive, name, spec, tuple(dims[d] for d in spec.dims))
            for name, spec in ARRAYS.items()
        }


def _check_array_bytes(dims: Mapping[str, int]) -> None:
    """Refuse, before decompressing anything, shapes whose arrays would not fit a sane
    budget: a few kilobytes of deflated zeros can otherwise claim gigabytes of memory."""
    needed = sum(
        math.prod(dims[d] for d in spec.dims) * spec.dtype.itemsize for spec in ARRAYS.values()
    )
    if needed > MAX_ARRAY_BYTES:
        raise ArtifactError(
            f"{ARRAYS_FILE}: the label and vocabulary counts in {PARAMS_FILE} need"
            f" {needed:,} bytes of arrays, more than the {MAX_ARRAY_BYTES:,} this loader"
            " accepts; refusing it before decompressing (a damaged or hostile artifact)"
        )


def _read_member(
    archive: zipfile.ZipFile, name: str, spec: ArraySpec, shape: tuple[int, ...]
) -> NDArray[Any]:
    where = f"{ARRAYS_FILE}: {name}"
    try:
        with archive.open(f"{name}.npy") as member:
            array = _read_npy(member, where, spec, shape)
    except ArtifactError:
        raise
    except Exception as error:  # corrupt, encrypted, unsupported: all refused
        raise ArtifactError(f"{where}: not a valid .npy array: {error}") from None
    if not np.isfinite(array).all():
        raise ArtifactError(f"{where}: holds NaN or infinite values")
    return np.ascontiguousarray(array)


def _read_npy(
    member: IO[bytes], where: str, spec: ArraySpec, shape: tuple[int, ...]
) -> NDArray[Any]:
    # The header alone says dtype and shape: checked before any data is read, so an object
    # array is refused without unpickling anything and a huge one without allocating it.
    version = npy.read_magic(member)
    if version == (1, 0):
        found_shape, fortran, dtype = npy.read_array_header_1_0(member)
    elif version == (2, 0):
        found_shape, fortran, dtype = npy.read_array_header_2_0(member)
    else:
        raise ArtifactError(f"{where}: unsupported .npy format version {version}")
    if dtype != spec.dtype:
        raise ArtifactError(f"{where}: dtype {dtype.str}, expected {spec.dtype.str}")
    if tuple(found_shape) != shape:
        named = ", ".join(f"{d}={n}" for d, n in zip(spec.dims, shape, strict=True))
        raise ArtifactError(
            f"{where}: shape {tuple(found_shape)}, expected {shape} ({named} in {PARAMS_FILE})"
        )
    size = math.prod(shape) * dtype.itemsize
    raw = member.read(size)
    if len(raw) != size:
        raise ArtifactError(f"{where}: truncated ({len(raw)} of {size} data bytes)")
    if member.read(1):
        raise ArtifactError(f"{where}: data after the array's {size} bytes")
    array: NDArray[Any] = np.frombuffer(raw, dtype=dtype).reshape(
        shape, order="F" if fortran else "C"
    )
    return array


# -- params.json --------------------------------------------------------------------------


def _encode_params(model: LinearTextModel) -> bytes:
    fields = {name: getattr(model, name) for name in Params.model_fields if name not in _SETTINGS}
    params = Params.model_validate({**_SETTINGS, **fields}, strict=False)
    words_alone = params.features == "word"
    return params.model_dump_json(exclude=_CHAR_FIELDS if words_alone else None).encode()


def _decode_params(data: bytes) -> Params:
    try:
        return Params.model_validate_json(data)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise ArtifactError(
            f"{PARAMS_FILE}: invalid ({error.error_count()} error(s)); first: {where}: "
            f"{first['msg']}"
        ) from None
