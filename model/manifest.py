"""The ``model.json`` manifest: what a model is, how it was trained and how well it does."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas import check_rfc3339

#: 2: data-only files (``arrays.npz`` + ``params.json``). 1 was a pickle (``model.joblib``)
#: and is refused on load.
FORMAT_VERSION: Literal[2] = 2

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
#: Largest data file a manifest may describe: a hundred times the research model's arrays.
#: A manifest that claims more is refused before any file is read.
MAX_DATA_FILE_BYTES = 2**30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LibraryVersions(_Strict):
    """Versions of the libraries the model was trained with."""

    python: str
    scikit_learn: str
    numpy: str
    scipy: str
    joblib: str


class RecordCounts(_Strict):
    """How many training records there were, and how many each head learned from."""

    total: Count
    section: Count
    tags: Count


class LabelRow(_Strict):
    """Cross-validated scores of one label (``threshold``: the tag's decision score cut)."""

    label: str
    precision: Fraction
    recall: Fraction
    f1: Fraction
    support: Count
    predicted: Count
    threshold: float | None = None


class SectionReport(_Strict):
    """Cross-validated section-head metrics (out-of-fold predictions)."""

    records: Count
    accuracy: Fraction
    macro_f1: Fraction
    per_label: list[LabelRow]


class TagReport(_Strict):
    """Cross-validated tags-head metrics (thresholds tuned on the other folds)."""

    records: Count
    micro_precision: Fraction
    micro_recall: Fraction
    micro_f1: Fraction
    macro_f1: Fraction
    per_label: list[LabelRow]


class CrossValidatedMetrics(_Strict):
    """Metrics of each head; a head the model does not have is null."""

    folds: Annotated[int, Field(ge=2)]
    section: SectionReport | None
    tags: TagReport | None


class ModelCard(_Strict):
    """Everything known about a trained model before it is written to disk."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    version: Annotated[str, Field(min_length=1, max_length=256)]
    created_at: Annotated[str, AfterValidator(check_rfc3339)]
    libraries: LibraryVersions
    sections: list[str]
    tags: list[str]
    training_data_sha256: Sha256
    records: RecordCounts
    params: dict[str, int | float | str | bool | None]
    metrics: CrossValidatedMetrics


class DataFile(_Strict):
    """One data file of the artifact: its exact size and sha256."""

    bytes: Annotated[int, Field(ge=0, le=MAX_DATA_FILE_BYTES)]
    sha256: Sha256


class Manifest(ModelCard):
    """``model.json``: the model card plus every data file of the artifact and its hash.

    The sha256 of this file's exact bytes therefore identifies the whole artifact: it is
    the digest a deployment pins (``--model-sha256``) and what a signature covers.
    """

    format_version: Literal[2]
    files: dict[str, DataFile]
