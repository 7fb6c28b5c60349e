"""Whatever the bytes of a record, it yields exactly one output or one dead letter.

Hand-written hostile records (one per class of problem) and property-based ones
(hypothesis) go through ``decode_article -> classify_batch -> encode`` with the demo model,
and through the offline ``classify``. Outputs must parse as strict JSON, validate against
the checked-in JSON Schema and carry every unknown field unchanged; dead letters carry the
original bytes and a reason. Hypothesis profiles: ``default`` (150 examples per property),
``ci`` (300; chosen when ``CI`` is set) and ``thorough`` (3,000, for a long local run), or
any one named by ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Topics as KafkaTopics
from conftest import (
    article_records,
    demo_texts,
    make_settings,
    produce,
    running_service,
    serve_settings,
    settle,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from devtools.tansu import EmbeddedBroker
from model.text import MAX_BODY_CHARS, compose_text
from schemas import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_TITLE_CHARS,
    PARSER_MAX_DEPTH,
    ArticleEvent,
    Classification,
    LabelScore,
    ModelRef,
    RecordLimits,
    encode_classified,
)
from schemas.generate import SCHEMA_DIR
from service.commands.cli import main as cli_main
from service.commands.offline import run_classify
from service.config.commands import ConfigError, ServeSettings
from service.core.classify import classify_batch, classify_values
from service.core.deadletter import MAX_MESSAGE_BYTES, DeadLetterReason
from service.core.records import Topics
from service.models.workers import ProcessClassifier, WireRecord

_SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "default", max_examples=150, deadline=None, database=None, suppress_health_check=_SLOW_DATA
)
settings.register_profile(
    "ci", max_examples=300, deadline=None, database=None, suppress_health_check=_SLOW_DATA
)
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, database=None, suppress_health_check=_SLOW_DATA
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)
#: The offline property loads the model and runs each file twice: a third of the examples.
_OFFLINE_EXAMPLES = max(20, settings().max_examples // 3)

TOPICS = Topics("out", "dlq")
DECLARED = tuple(ArticleEvent.model_fields)
OUTPUT_HEAD = (*DECLARED, "classification", "classified_at")
VALIDATOR = Draft202012Validator(
    json.loads((SCHEMA_DIR / "classified-article-event.v1.json").read_text("utf-8")),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)
#: Names that collide with something in pydantic, Python or JavaScript if used carelessly.
INTERNAL_NAMES = (
    "_fields_set",
    "model_config",
    "model_fields",
    "model_extra",
    "model_fields_set",
    "model_construct",
    "model_dump",
    "__class__",
    "__dict__",
    "__init__",
    "__slots__",
    "__pydantic_extra__",
    "__pydantic_fields_set__",
    "__pydantic_private__",
    "__pydantic_validator__",
    "__proto__",
    "constructor",
    "self",
    "cls",
    "_",
    "",
    "\u0000",
)


@dataclass(frozen=True, slots=True)
class _Record:
    value: bytes | None
    offset: int
    key: bytes | None = b"k"
    topic: str = "in"
    partition: int = 0
    timestamp: int = 0
    headers: tuple[tuple[str, bytes | None], ...] = ()


# -- checks shared by every test --------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise AssertionError(f"output holds the non-JSON constant {name}")


def _strict_json(raw: bytes) -> Any:
    """Parse as RFC 8259 JSON: no NaN/Infinity, valid UTF-8."""
    return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)


def _input_fields(raw: bytes) -> dict[str, Any]:
    """The input as a JSON reader sees it (a repeated key: the last value wins)."""
    parsed = json.loads(raw.decode("utf-8"))
    assert isinstance(parsed, dict)
    return parsed


def check_output(source: bytes, output: bytes) -> dict[str, Any]:
    """``output`` is strict JSON valid against the schema, in the documented field order,
    with every field of ``source`` unchanged."""
    document = _strict_json(output)
    VALIDATOR.validate(document)
    given_fields = _input_fields(source)
    keys = list(document)
    assert tuple(keys[: len(OUTPUT_HEAD)]) == OUTPUT_HEAD
    unknown = [key for key in given_fields if key not in DECLARED]
    assert keys[len(OUTPUT_HEAD) :] == unknown
    for key, value in given_fields.items():
        assert document[key] == value, key
    return dict(document)


def check_dead_letter(record: _Record, headers: Sequence[tuple[str, bytes | None]]) -> str:
    """A dead letter names a known reason and a bounded message; returns the reason."""
    values = {name: value or b"" for name, value in headers}
    reason = values["error.reason"].decode()
    assert reason in {item.value for item in DeadLetterReason}
    assert 0 < len(values["error.message"]) <= MAX_MESSAGE_BYTES
    assert values["source.offset"] == str(record.offset).encode()
    return reason


def run_batch(predictor: Any, values: Sequence[bytes | None]) -> list[tuple[str | None, Any]]:
    """Each value's outcome through classify_batch: (None, output) or (reason, message)."""
    records = [_Record(value, offset) for offset, value in enumerate(values)]
    result = classify_batch(
        records, predictor, topics=TOPICS, max_event_bytes=DEFAULT_MAX_EVENT_BYTES
    )
    assert [item.source_offset for item in result.outgoing] == [r.offset for r in records]
    outcomes: list[tuple[str | None, Any]] = []
    for record, item in zip(records, result.outgoing, strict=True):
        assert item.key == record.key
        if item.reason is None:
            assert item.topic == TOPICS.output
            assert item.value is not None
            assert record.value is not None
            outcomes.append((None, check_output(record.value, item.value)))
        else:
            assert item.topic == TOPICS.dead_letter
            assert item.value == record.value
            assert check_dead_letter(record, item.headers) == item.reason.value
            outcomes.append(
                (item.reason.value, (dict(item.headers)["error.message"] or b"").decode())
            )
    assert len(result.verdicts) == sum(reason is None for reason, _ in outcomes)
    return outcomes


# -- a hand-written hostile corpus: the known instance and one record per class ----------


def _event(**extra: Any) -> bytes:
    event = {"article_id": "a-1", "title": "Striker scores twice", **extra}
    return json.dumps(event, ensure_ascii=False).encode()


def _raw_event(extra: str) -> bytes:
    return b'{"article_id":"a-1","title":"Striker scores twice",' + extra.encode() + b"}"


def _nested(depth: int) -> bytes:
    """An event whose field ``x`` makes it ``depth`` levels deep (the event is level 1)."""
    inner = depth - 1
    return _raw_event('"x":' + "[" * inner + "1" + "]" * inner)


def _fields(total: int) -> bytes:
    """An event with ``total`` fields and array items in all (two declared fields)."""
    return _raw_event('"x":[' + ",".join(["0"] * (total - 3)) + "]")


HOSTILE: list[tuple[str, bytes | None, str | None]] = [
    ("known instance: _fields_set", b'{"article_id":"a","title":"t","_fields_set":1}', None),
    ("every internal name at once", _event(**dict.fromkeys(INTERNAL_NAMES, 1)), None),
    ("internal names nested", _event(x={"__class__": {"_fields_set": ["self"]}}), None),
    ("reserved output field", _event(classification=1), "schema_violation"),
    ("number over float range", _raw_event('"x":1e999'), "schema_violation"),
    ("negative overflow nested", _raw_event('"x":{"y":[-1E400]}'), "schema_violation"),
    ("NaN literal", _raw_event('"x":NaN'), "schema_violation"),
    ("Infinity literal", _raw_event('"x":[Infinity]'), "schema_violation"),
    ("underflow to zero", _raw_event('"x":1e-400'), None),
    ("huge integer, 4300 digits", _raw_event('"x":' + "9" * 4300), None),
    ("integer over 4300 digits", _raw_event('"x":' + "9" * 4301), "too_large"),
    ("negative zero and exponent forms", _raw_event('"x":[-0,-0.0,1E2,0.1e1]'), None),
    (f"nested {DEFAULT_MAX_DEPTH} deep", _nested(DEFAULT_MAX_DEPTH), None),
    (f"nested {DEFAULT_MAX_DEPTH + 1} deep", _nested(DEFAULT_MAX_DEPTH + 1), "too_large"),
    ("nested past the parser's limit", _nested(PARSER_MAX_DEPTH + 50), "too_large"),
    (f"{DEFAULT_MAX_FIELDS} fields and items", _fields(DEFAULT_MAX_FIELDS), None),
    (f"{DEFAULT_MAX_FIELDS + 1} fields and items", _fields(DEFAULT_MAX_FIELDS + 1), "too_large"),
    (
        "50,000 top-level fields",
        _raw_event(",".join(f'"f{i}":0' for i in range(50_000))),
        "too_large",
    ),
    ("100,000 empty objects", _raw_event('"x":[' + ",".join(["{}"] * 100_000) + "]"), "too_large"),
    ("title at the cap", _event(title="t" * DEFAULT_MAX_TITLE_CHARS), None),
    ("title over the cap", _event(title="t " * DEFAULT_MAX_TITLE_CHARS), "too_large"),
    ("1 MB body of one word", _event(body="word " * 200_000), None),
    ("1 MB body of distinct tokens", _event(body=" ".join(f"w{i}" for i in range(120_000))), None),
    ("1 MB unknown string", _event(x="\u00e9" * 500_000), None),
    ("control characters", _event(title="a\u0000b\u001f\u007f\u2028c", x="\u0000\t\n"), None),
    ("non-BMP characters", _event(title="\U0001f600 goal", x={"\U0001d11e": "\U00010348"}), None),
    ("escaped lone high surrogate", _raw_event('"x":"\\ud800"'), "invalid_json"),
    ("escaped lone low surrogate", _raw_event('"x":"\\udc00"'), "invalid_json"),
    (
        "escaped surrogate, wrong pair",
        b'{"article_id":"a","title":"\\ud800\\u0041"}',
        "invalid_json",
    ),
    ("UTF-8 encoded surrogate", b'{"article_id":"a","title":"\xed\xa0\x80"}', "invalid_utf8"),
    ("byte order mark", b"\xef\xbb\xbf" + _event(), "invalid_json"),
    ("duplicate unknown keys", _raw_event('"x":1,"x":{"y":2}'), None),
    ("duplicate declared key", b'{"article_id":"a","title":"1","title":"2"}', None),
    ("wrong type: title", _event(title=["t"]), "schema_violation"),
    ("wrong type: article_id", b'{"article_id":null,"title":"t"}', "schema_violation"),
    ("wrong type: schema_version", _event(schema_version="1"), "schema_violation"),
    ("not an object", b'["article_id","a"]', "schema_violation"),
    ("empty value", b"", "invalid_json"),
    ("tombstone", None, "schema_violation"),
    ("trailing garbage", _event() + b"\x00", "invalid_json"),
    ("over the byte limit", _event(body="x" * DEFAULT_MAX_EVENT_BYTES), "too_large"),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE]
)
def test_hostile_record_gets_its_documented_outcome(
    predictor: Any, raw: bytes | None, expected: str | None
) -> None:
    """Each hostile record, alone and between two good ones, yields its one documented
    outcome (an output that keeps every field, or a dead letter with the reason), and the
    good records around it are still classified."""
    good = _event(desk="sport")
    outcomes = run_batch(predictor, [good, raw, good])
    assert [reason for reason, _ in outcomes] == [None, expected, None]


def test_the_known_instance_round_trips_its_field(predictor: Any) -> None:
    """The 50-byte record that crashed every instance now comes out with its field."""
    ((reason, output),) = run_batch(predictor, [b'{"article_id":"a","title":"t","_fields_set":1}'])
    assert reason is None
    assert output["_fields_set"] == 1


def test_limit_messages_name_the_limit(predictor: Any) -> None:
    """A record over a cap is dead-lettered as too_large with a message naming the limit."""
    outcomes = run_batch(
        predictor,
        [_event(title="t" * 2001), _nested(65), _fields(1001), _raw_event('"x":' + "9" * 5000)],
    )
    messages = [message for _, message in outcomes]
    assert "title: 2001 characters, over the limit of 2000" in messages[0]
    assert "x: nested 65 levels deep, over the limit of 64" in messages[1]
    assert "limit of 1000" in messages[2]
    assert "more digits than the parser accepts" in messages[3]


def test_caps_are_configurable(predictor: Any) -> None:
    """Tighter RecordLimits refuse what the defaults accept, and looser ones accept more."""
    values = [_event(title="t" * 11), _nested(4), _fields(11)]
    tight = classify_values(
        values,
        predictor,
        max_event_bytes=DEFAULT_MAX_EVENT_BYTES,
        limits=RecordLimits(max_title_chars=10, max_fields=10, max_depth=3),
    )
    assert [getattr(outcome, "reason", None) for outcome in tight] == ["too_large"] * 3
    loose = classify_values(
        [_event(title="t" * 5000), _nested(150), _fields(5000)],
        predictor,
        max_event_bytes=DEFAULT_MAX_EVENT_BYTES,
        limits=RecordLimits(max_title_chars=5000, max_fields=5000, max_depth=150),
    )
    assert [getattr(outcome, "reason", None) for outcome in loose] == [None] * 3


# -- per-record failures after decoding ---------------------------------------------------


class _FaultyPredictor:
    """The demo model, except on articles whose title names a fault."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name
        self.version = inner.version

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        results: list[Classification] = self._inner.predict(articles)
        ref = ModelRef(name=self.name, version=self.version)
        for index, article in enumerate(articles):
            if article.title == "model raises":
                raise RuntimeError(f"model blew up on {article.body}")
            if article.title == "nan score":
                section = LabelScore.model_construct(label="x", score=float("nan"))
                results[index] = Classification.model_construct(section=section, tags=[], model=ref)
            if article.title == "unserialisable label":
                section = LabelScore.model_construct(label=object(), score=0.5)  # type: ignore[arg-type]
                results[index] = Classification.model_construct(section=section, tags=[], model=ref)
            if article.title == "not a classification":
                results[index] = "sport"  # type: ignore[call-overload]
            if article.title == "out of memory":
                raise MemoryError
        return results


SECRET = "embargoed-scoop-text"


@pytest.mark.parametrize(
    ("title", "stage"),
    [
        ("model raises", "the model failed"),
        ("nan score", "the model's result failed"),
        ("not a classification", "the model's result failed"),
        ("unserialisable label", "encoding the output failed"),
    ],
)
def test_a_per_record_failure_is_a_classification_error_and_the_batch_goes_on(
    predictor: Any, title: str, stage: str
) -> None:
    """A failure in the model, its result or the encoder on one article dead-letters that
    article as classification_error naming the stage (never the text); the others publish."""
    poison = _event(title=title, body=SECRET)
    records = [_Record(_event(), 0), _Record(poison, 1), _Record(_event(x=1), 2)]
    result = classify_batch(
        records, _FaultyPredictor(predictor), topics=TOPICS, max_event_bytes=4096
    )
    reasons = [item.reason for item in result.outgoing]
    assert reasons == [None, DeadLetterReason.CLASSIFICATION_ERROR, None]
    message = (dict(result.outgoing[1].headers)["error.message"] or b"").decode()
    assert message.startswith(stage)
    assert SECRET not in message
    assert result.outgoing[1].value == poison
    assert len(result.verdicts) == 2


def test_a_decoder_bug_is_a_classification_error(
    predictor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should decode_article itself raise, that record is dead-lettered, not the batch."""

    def broken(raw: bytes | None, **_: Any) -> Any:
        if raw and b"boom" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return ArticleEvent(article_id="a", title="t")

    monkeypatch.setattr("service.core.classify.decode_article", broken)
    outcomes = classify_values([b"ok", b"boom", b"ok"], predictor, max_event_bytes=100)
    assert [getattr(outcome, "reason", None) for outcome in outcomes] == [
        None,
        DeadLetterReason.CLASSIFICATION_ERROR,
        None,
    ]
    assert getattr(outcomes[1], "message", "").startswith("decoding failed")


def test_a_failure_that_is_not_per_record_propagates(predictor: Any) -> None:
    """Running out of memory says nothing about the record: it reaches the caller."""
    with pytest.raises(MemoryError):
        classify_values(
            [_event(title="out of memory")], _FaultyPredictor(predictor), max_event_bytes=4096
        )


def test_offline_classify_reports_a_failing_line_and_goes_on(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline classify takes the same per-record path: a line the encoder fails on is
    reported on stderr with its number and reason, and the next lines are still written."""

    def encode(event: ArticleEvent, classification: Classification, at: str) -> bytes:
        if event.model_extra == {"x": "second"}:
            raise TypeError(f"cannot encode {event.title}")
        return encode_classified(event, classification, at)

    monkeypatch.setattr("service.core.classify.encode_classified", encode)
    source = b"\n".join([_event(x="first"), _event(x="second"), _event(x="third")]) + b"\n"
    sink, stderr = io.BytesIO(), io.StringIO()
    status = run_classify(
        model_dir,
        io.BytesIO(source),
        sink,
        strict=True,
        max_event_bytes=4096,
        stderr=stderr,
    )
    assert status == 1
    assert [json.loads(line)["x"] for line in sink.getvalue().splitlines()] == ["first", "third"]
    assert "line 2: classification_error: encoding the output failed" in stderr.getvalue()
    assert "Traceback" not in stderr.getvalue()


def test_offline_classify_skips_an_endless_line_without_holding_it(model_dir: Path) -> None:
    """A line longer than the byte limit is reported as too_large with its real length."""
    source = _event(x="before") + b"\n" + b"x" * 50_000 + b"\n" + _event(x="after")
    sink, stderr = io.BytesIO(), io.StringIO()
    run_classify(
        model_dir,
        io.BytesIO(source),
        sink,
        strict=False,
        max_event_bytes=1000,
        stderr=stderr,
    )
    assert [json.loads(line)["x"] for line in sink.getvalue().splitlines()] == ["before", "after"]
    assert "line 2: too_large: event is 50000 bytes, over the limit of 1000 bytes" in (
        stderr.getvalue()
    )


# -- generated records --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """A JSON token written as is: numbers Python's json cannot write (1e999, NaN)."""

    text: str


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object as key-value pairs, so that a key can repeat."""

    pairs: tuple[tuple[str, Any], ...]


def emit(value: Any, *, ascii_only: bool) -> str:
    """JSON text for a generated value; ``ascii_only`` escapes every non-ASCII character
    (a lone surrogate becomes a ``\\ud800`` escape, otherwise it stays a raw code point)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        members = (
            json.dumps(key, ensure_ascii=ascii_only) + ":" + emit(item, ascii_only=ascii_only)
            for key, item in value.pairs
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(emit(item, ascii_only=ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def to_bytes(value: Any, *, ascii_only: bool) -> bytes:
    # surrogatepass: a raw lone surrogate becomes the (invalid) UTF-8 bytes a broken
    # producer would send.
    return emit(value, ascii_only=ascii_only).encode("utf-8", "surrogatepass")


ANY_CHAR = st.characters(codec=None, categories=None)
SPECIAL_NUMBERS = st.sampled_from(
    (
        *("1e999", "-1E999", "NaN", "Infinity", "-Infinity", "1e-400", "-0", "-0.0", "1E2"),
        *("0.1e1", "1.00000000000000000001", "9" * 4300, "-" + "9" * 4301, "1" + "0" * 30),
    )
)
KEYS = st.one_of(st.text(ANY_CHAR, max_size=8), st.sampled_from(INTERNAL_NAMES))
SAFE_KEYS = st.one_of(st.text(max_size=8), st.sampled_from(INTERNAL_NAMES)).filter(
    lambda key: key not in DECLARED and key not in {"classification", "classified_at"}
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    SPECIAL_NUMBERS.map(Raw),
    st.text(ANY_CHAR, max_size=20),
)
SAFE_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def _tree(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(st.tuples(keys, children), max_size=4).map(lambda p: Obj(tuple(p))),
        ),
        max_leaves=12,
    )


@st.composite
def _deep(draw: st.DrawFn) -> Any:
    value: Any = draw(LEAVES)
    for _ in range(draw(st.integers(1, PARSER_MAX_DEPTH + 20))):
        value = [value] if draw(st.booleans()) else Obj(((draw(KEYS), value),))
    return value


@st.composite
def _wide(draw: st.DrawFn) -> Any:
    count = draw(st.sampled_from([10, 900, 998, 999, 1000, 1001, 5_000, 30_000]))
    if draw(st.booleans()):
        return [0] * count
    return Obj(tuple((f"f{index}", index) for index in range(count)))


@st.composite
def _long_text(draw: st.DrawFn) -> str:
    unit = draw(st.text(ANY_CHAR, min_size=1, max_size=3))
    return unit * (draw(st.integers(1, 250_000)) // len(unit))


@st.composite
def _long_safe_text(draw: st.DrawFn) -> str:
    """Up to 60,000 characters: under the byte limit even with every one escaped."""
    unit = draw(st.text(min_size=1, max_size=3))
    return unit * (draw(st.integers(1, 60_000)) // len(unit))


def _depth(value: Any) -> int:
    if isinstance(value, Obj):
        return 1 + max((_depth(item) for _, item in value.pairs), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


HOSTILE_VALUES = st.one_of(_tree(LEAVES, KEYS), _deep(), _wide(), _long_text())
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=30),
    st.sampled_from(["Striker scores twice", "Central bank holds rates", " ", ""]),
    _long_text(),
)
#: Per declared field: (a valid value, anything at all). Most events get valid values so
#: that the unknown fields' hostility is what decides, and outputs are common.
DECLARED_VALUES: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "article_id": (st.text(min_size=1, max_size=10).filter(str.strip), LEAVES),
    "title": (TEXT, LEAVES),
    "body": (TEXT, LEAVES),
    "event_id": (st.one_of(st.none(), st.text(max_size=10)), LEAVES),
    "url": (st.sampled_from([None, "https://news.example.org/a"]), LEAVES),
    "published_at": (st.sampled_from([None, "2026-11-20T08:15:00Z"]), st.text(max_size=25)),
    "language": (st.sampled_from([None, "en", "en-GB"]), st.sampled_from(["english", "e"])),
    "source": (st.sampled_from([None, "cms"]), LEAVES),
    "schema_version": (st.just(1), LEAVES),
}


@st.composite
def hostile_records(draw: st.DrawFn) -> bytes:
    """Any bytes a broken or hostile producer might send, mostly JSON objects."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return to_bytes(draw(HOSTILE_VALUES), ascii_only=draw(st.booleans()))
    pairs: list[tuple[str, Any]] = []
    for name, (valid, anything) in DECLARED_VALUES.items():
        if name in ("article_id", "title") or draw(st.booleans()):
            broken = draw(st.integers(0, 19)) == 0
            pairs.append((name, draw(anything if broken else valid)))
    unknown = st.one_of(HOSTILE_VALUES, _tree(SAFE_LEAVES, SAFE_KEYS))
    pairs += draw(st.lists(st.tuples(KEYS, unknown), max_size=4))
    if draw(st.booleans()):  # a repeated key: the last value wins
        pairs += draw(st.lists(st.sampled_from(pairs), max_size=2))
    order = draw(st.permutations(range(len(pairs))))
    return to_bytes(Obj(tuple(pairs[i] for i in order)), ascii_only=draw(st.booleans()))


@st.composite
def well_formed_records(draw: st.DrawFn) -> bytes:
    """Valid events with arbitrary unknown fields inside every cap: each must come out."""
    pairs: list[tuple[str, Any]] = [
        ("article_id", draw(st.text(min_size=1, max_size=10).filter(str.strip))),
        ("title", draw(st.text(min_size=1, max_size=40).filter(str.strip))),
    ]
    if draw(st.booleans()):
        pairs.append(("body", draw(st.one_of(st.text(max_size=200), _long_safe_text()))))
    trees = _tree(SAFE_LEAVES, SAFE_KEYS).filter(lambda tree: _depth(tree) < DEFAULT_MAX_DEPTH)
    pairs += draw(st.lists(st.tuples(SAFE_KEYS, trees), max_size=8))
    order = draw(st.permutations(range(len(pairs))))
    return to_bytes(Obj(tuple(pairs[i] for i in order)), ascii_only=draw(st.booleans()))


@given(values=st.lists(hostile_records(), min_size=1, max_size=4))
def test_every_generated_record_yields_one_valid_output_or_one_dead_letter(
    predictor: Any, values: list[bytes]
) -> None:
    """Generated hostile records never raise: each yields one output, which is strict JSON
    valid against the schema and keeps every field, or one dead letter with its bytes."""
    for reason, _ in run_batch(predictor, values):
        event(f"outcome: {reason or 'output'}")


@given(values=st.lists(well_formed_records(), min_size=1, max_size=4))
def test_every_well_formed_record_comes_out_with_its_unknown_fields(
    predictor: Any, values: list[bytes]
) -> None:
    """A valid event within the caps, whatever its unknown fields' names and values, is
    published with each unknown field unchanged, in the documented order."""
    outcomes = run_batch(predictor, values)
    assert [reason for reason, _ in outcomes] == [None] * len(values)


@settings(max_examples=_OFFLINE_EXAMPLES)
@given(
    values=st.lists(
        st.one_of(hostile_records(), well_formed_records()).filter(
            lambda raw: b"\n" not in raw and not raw.endswith(b"\r") and bool(raw.strip())
        ),
        min_size=1,
        max_size=6,
    ),
    blank=st.sampled_from([b"", b"   ", b"\r"]),
)
def test_offline_classify_gives_each_line_the_service_outcome(
    model_dir: Path, predictor: Any, values: list[bytes], blank: bytes
) -> None:
    """The offline classify writes one valid output line per accepted line, in order, and
    reports every other line with its number and the reason the service would give."""
    lines = [blank, *values]
    sink, stderr = io.BytesIO(), io.StringIO()
    run_classify(
        model_dir,
        io.BytesIO(b"\n".join(lines)),
        sink,
        strict=False,
        max_event_bytes=DEFAULT_MAX_EVENT_BYTES,
        stderr=stderr,
    )
    expected = run_batch(predictor, values)
    outputs = sink.getvalue().splitlines()
    reported = stderr.getvalue().splitlines()
    accepted = [value for value, (reason, _) in zip(values, expected, strict=True) if not reason]
    assert len(outputs) == len(accepted)
    for value, output in zip(accepted, outputs, strict=True):
        check_output(value, output)
    refused = [
        f"line {number}: {reason}:"
        for number, (reason, _) in enumerate(expected, start=2)
        if reason is not None
    ]
    assert [line.split(" ", 3)[:3] for line in reported[:-1]] == [r.split(" ") for r in refused]
    assert reported[-1] == (
        f"classified {len(accepted)} article(s), {len(refused)} invalid line(s) skipped"
    )


# -- the caps as configuration --------------------------------------------------------------


def _parse(argv: list[str], environ: dict[str, str] | None = None) -> ServeSettings:
    assert argv[0] == "serve"
    return serve_settings(*argv[1:], env=environ)


def test_serve_caps_come_from_flags_or_the_environment() -> None:
    """--max-title-chars, --max-fields and --max-depth (or their ARTICLE_CLASSIFIER_
    variables; a flag wins) become the settings' record limits; unset, the defaults."""
    default = _parse(["serve", "--model", "m"])
    assert default.record_limits == RecordLimits()
    args = _parse(
        ["serve", "--model", "m", "--max-title-chars", "300", "--max-depth", "10"],
        {"ARTICLE_CLASSIFIER_MAX_FIELDS": "50", "ARTICLE_CLASSIFIER_MAX_DEPTH": "20"},
    )
    assert args.record_limits == RecordLimits(max_title_chars=300, max_fields=50, max_depth=10)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--max-title-chars", "0"), ("--max-fields", "-1"), ("--max-depth", "201")],
)
def test_a_bad_serve_cap_names_the_option(flag: str, value: str) -> None:
    """A cap that cannot work is refused with the option and the value named."""
    with pytest.raises(ConfigError, match=f"{flag}='{value}'"):
        (_parse(["serve", "--model", "m", flag, value]))


def test_classify_caps_are_options_too(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline classify takes the same caps: a title over --max-title-chars is reported."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(_event(title="t" * 40) + b"\n" + _event())
    output = tmp_path / "out.jsonl"
    status = cli_main(
        [
            *("classify", "--model", str(model_dir), "--input", str(source)),
            *("--output", str(output), "--strict", "--max-title-chars", "30"),
            *("--max-fields", "10", "--max-depth", "3"),
        ]
    )
    assert status == 1
    assert len(output.read_bytes().splitlines()) == 1
    assert (
        "line 1: too_large: title: 40 characters, over the limit of 30" in capsys.readouterr().err
    )


async def test_worker_process_applies_the_caps(model_dir: Path) -> None:
    """The caps reach the worker process: a record over one is dead-lettered there."""
    classifier = ProcessClassifier(
        model_dir,
        topics=TOPICS,
        max_event_bytes=4096,
        log_level="WARNING",
        limits=RecordLimits(max_title_chars=5),
    )
    try:
        await classifier.start()
        records = [
            WireRecord("in", 0, 0, 0, b"k", _event()),
            WireRecord("in", 0, 1, 0, b"k", _event(title="short")),
        ]
        result = await classifier.classify(records)
    finally:
        classifier.close()
    assert [item.reason for item in result.outgoing] == [DeadLetterReason.TOO_LARGE, None]


def test_the_model_reads_only_the_start_of_a_huge_body(predictor: Any) -> None:
    """Past MAX_BODY_CHARS a body changes nothing the model says, and the demo articles
    are all shorter, so their predictions are what they were without the cap."""
    start = "The central bank kept interest rates on hold as inflation eased. " * 800
    assert len(start) > MAX_BODY_CHARS
    capped = ArticleEvent(article_id="a", title="Rates", body=start[:MAX_BODY_CHARS])
    huge = ArticleEvent(article_id="a", title="Rates", body=start + "striker goal " * 70_000)
    assert predictor.predict([huge]) == predictor.predict([capped])
    assert compose_text("t", huge.body, 2) == compose_text("t", capped.body, 2)
    assert max(len(body) for _, body in demo_texts()) < MAX_BODY_CHARS


@pytest.mark.kafka
async def test_the_running_service_gives_each_hostile_record_its_outcome(
    broker: EmbeddedBroker, topics: KafkaTopics, model_dir: Path, predictor: Any
) -> None:
    """Through the broker, each hostile record of the corpus (those under 100 kB) comes out
    once, as an output or a dead letter with its documented reason, the valid records after
    them are classified, and the service keeps running and stops cleanly."""
    corpus = [(name, raw, reason) for name, raw, reason in HOSTILE if len(raw or b"") < 100_000]
    records: list[tuple[bytes | None, bytes | None]] = [
        (f"hostile-{index}".encode(), raw) for index, (_, raw, _) in enumerate(corpus)
    ]
    valid = article_records(20, prefix="after-hostile")
    await produce(broker.bootstrap_servers, topics.input, records + valid)
    expected_dead = sum(reason is not None for _, _, reason in corpus)
    expected_out = len(corpus) - expected_dead + len(valid)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir)
    async with running_service(settings, predictor) as service:
        dead = await settle(broker.bootstrap_servers, topics.dead_letter, expected_dead)
        outputs = await settle(broker.bootstrap_servers, topics.output, expected_out)
        assert not service.task.done()
    outcome: dict[bytes | None, list[str | None]] = {}
    for record in outputs:
        outcome.setdefault(record.key, []).append(None)
    for record in dead:
        outcome.setdefault(record.key, []).append(dict(record.headers)["error.reason"].decode())
    for (key, _), (name, _, reason) in zip(records, corpus, strict=True):
        assert outcome.get(key) == [reason], name
    assert all(outcome.get(key) == [None] for key, _ in valid)
