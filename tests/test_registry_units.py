"""Schema Registry framing without a registry: the wire format, the id checks and their
cache, the outputs' framing, and the options (a registry faked with httpx's MockTransport)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import serve_settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Classification, LabelScore, ModelRef
from service.config.commands import ServeSettings
from service.config.options import RegistryInput
from service.core.classify import classify_batch
from service.core.deadletter import DeadLetterReason
from service.core.errors import RegistryUnavailableError
from service.core.framing import (
    VALUE_SCHEMA_ID_HEADER,
    Framed,
    FramingError,
    Unframed,
    frame,
    unframe,
)
from service.core.records import BatchResult, InputRecord, Topics
from service.kafka.registry import (
    RegistryClient,
    RegistryFraming,
    build_registry_framing,
    output_schema,
)

ARTICLE = json.dumps({"article_id": "a-1", "title": "Rates held", "body": "The bank"}).encode()


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class _Predictor:
    name = "fake"
    version = "1"

    def predict(self, articles: Sequence[Any]) -> list[Classification]:
        return [
            Classification(
                section=LabelScore(label="business", score=0.9),
                tags=[],
                model=ModelRef(name="fake", version="1"),
            )
            for _ in articles
        ]


class _Classifier:
    def __init__(self) -> None:
        self.seen: list[bytes | None] = []

    async def classify(self, records: Sequence[InputRecord]) -> BatchResult:
        self.seen.extend(record.value for record in records)
        return classify_batch(
            records, _Predictor(), topics=Topics("out", "dlq"), max_event_bytes=1 << 20
        )


class _Registry:
    """A fake Confluent API: ids -> subjects; counts the lookups."""

    def __init__(self, subjects: dict[int, list[str]]) -> None:
        self.subjects = subjects
        self.lookups: list[int] = []
        self.registered: list[tuple[str, dict[str, Any]]] = []
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path.removeprefix("/api")
        if request.method == "POST" and path.startswith("/subjects/"):
            self.registered.append((path.split("/")[2], json.loads(request.content)))
            return httpx.Response(200, json={"id": 42})
        schema_id = int(path.split("/")[3])
        self.lookups.append(schema_id)
        if schema_id not in self.subjects:
            return httpx.Response(404, json={"error_code": 40403, "message": "not found"})
        versions = [{"subject": s, "version": 1} for s in self.subjects[schema_id]]
        return httpx.Response(200, json=versions)


def _framing(
    registry: _Registry, mode: RegistryInput = RegistryInput.REQUIRED, *, output: bool = True
) -> RegistryFraming:
    client = RegistryClient("http://registry/api", transport=httpx.MockTransport(registry))
    return RegistryFraming(
        client,
        input_mode=mode,
        allowed_subjects=["articles-value"],
        output_subject="out-value" if output else None,
        dead_letter_topic="dlq",
    )


def _records(*values: bytes | tuple[bytes, Sequence[tuple[str, bytes]]]) -> list[_Record]:
    records = []
    for offset, value in enumerate(values):
        payload, headers = value if isinstance(value, tuple) else (value, ())
        records.append(_Record("articles", 0, offset, 0, b"k", payload, headers))
    return records


def test_unframe_reads_the_prefix_then_the_header() -> None:
    """The magic byte and 4-byte id come off the value; a __value_schema_id header wins
    and leaves the value whole, as confluent-kafka's dual deserialiser reads them."""
    assert unframe(frame(7, ARTICLE)) == Framed(7, ARTICLE)
    assert unframe(ARTICLE) == Unframed()
    assert unframe(ARTICLE, [(VALUE_SCHEMA_ID_HEADER, frame(9, b""))]) == Framed(9, ARTICLE)
    short = unframe(b"\x00\x00\x01")
    assert isinstance(short, FramingError)
    assert short.reason is DeadLetterReason.SCHEMA_ID_MISSING
    guid = unframe(ARTICLE, [(VALUE_SCHEMA_ID_HEADER, b"\x01" + bytes(16))])
    assert isinstance(guid, FramingError)
    assert guid.reason is DeadLetterReason.SCHEMA_ID_UNKNOWN


async def test_ids_are_checked_once_and_refusals_dead_lettered_in_order() -> None:
    """An allowed id is classified without its prefix and the output framed with the
    registered id; unknown ids, ids of other subjects and unframed values are dead letters
    carrying the original value; each id is asked once."""
    registry = _Registry({1: ["articles-value"], 2: ["other-value"]})
    framing = _framing(registry)
    await framing.start()
    await framing.start()  # a later session reuses the id
    assert [subject for subject, _ in registry.registered] == ["out-value"]
    assert registry.registered[0][1] == {"schemaType": "JSON", "schema": output_schema()}
    classifier = _Classifier()
    records = _records(
        frame(1, ARTICLE), frame(3, ARTICLE), ARTICLE, frame(2, ARTICLE), frame(1, b"{")
    )
    result = await framing.classify(records, classifier)
    assert classifier.seen == [ARTICLE, b"{"]
    out = result.outgoing
    assert [item.source_offset for item in out] == [0, 1, 2, 3, 4]
    assert [item.reason for item in out] == [
        None,
        DeadLetterReason.SCHEMA_ID_UNKNOWN,
        DeadLetterReason.SCHEMA_ID_MISSING,
        DeadLetterReason.SCHEMA_SUBJECT_REFUSED,
        DeadLetterReason.INVALID_JSON,
    ]
    assert out[0].value is not None
    assert out[0].value[:5] == frame(42, b"")
    assert json.loads(out[0].value[5:])["classification"]["section"]["label"] == "business"
    assert [item.value for item in out[1:]] == [record.value for record in records[1:]]
    await framing.classify(_records(frame(1, ARTICLE), frame(3, ARTICLE)), classifier)
    assert sorted(registry.lookups) == [1, 2, 3]


async def test_optional_input_reads_unframed_values_as_json() -> None:
    """--registry-input optional classifies a plain JSON value as it is."""
    framing = _framing(_Registry({}), RegistryInput.OPTIONAL, output=False)
    result = await framing.classify(_records(ARTICLE), _Classifier())
    assert [item.reason for item in result.outgoing] == [None]
    assert result.outgoing[0].value is not None
    assert result.outgoing[0].value.startswith(b"{")


async def test_an_unreachable_registry_raises_instead_of_dead_lettering() -> None:
    """A lookup the registry does not answer ends the batch with RegistryUnavailableError
    (the session restarts from the last commit): no article becomes a dead letter."""
    registry = _Registry({1: ["articles-value"]})
    registry.down = True
    records = _records(frame(1, ARTICLE), frame(2, ARTICLE), frame(3, ARTICLE))
    with pytest.raises(RegistryUnavailableError, match="connection refused"):
        await _framing(registry).classify(records, _Classifier())


def test_registry_options_need_a_url_and_one_kind_of_credentials() -> None:
    """--registry-input/--registry-output need --schema-registry-url; basic auth and a
    bearer token exclude each other; the subjects default to the TopicNameStrategy."""
    with pytest.raises(ValueError, match="need --schema-registry-url"):
        serve_settings("--model", "m", "--registry-output")
    with pytest.raises(ValueError, match="not both"):
        serve_settings(
            "--model", "m", "--schema-registry-url", "http://r", "--schema-registry-token", "t",
            "--schema-registry-username", "u",
        )  # fmt: skip
    settings = serve_settings(
        "--model", "m", "--registry-input", "required", "--registry-output",
        env={"ARTICLE_CLASSIFIER_SCHEMA_REGISTRY_URL": "http://registry:8081"},
    )  # fmt: skip
    assert isinstance(settings, ServeSettings)
    framing = build_registry_framing(settings)
    assert framing is not None
    assert framing.client.url == "http://registry:8081"
    assert framing._allowed == {"articles-value"}
    assert framing._output_subject == "articles.classified-value"


def test_registry_password_comes_from_a_file(tmp_path: Any) -> None:
    """The basic-auth password, like the other secrets, may come from a _FILE variable."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = serve_settings(
        "--model", "m", "--schema-registry-url", "https://r", "--schema-registry-username", "u",
        env={"ARTICLE_CLASSIFIER_SCHEMA_REGISTRY_PASSWORD_FILE": str(secret)},
    )  # fmt: skip
    assert settings.schema_registry_password is not None
    assert settings.schema_registry_password.get_secret_value() == "s3cret"


async def test_refused_ids_are_asked_again_after_their_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown id is not refused for good: past NEGATIVE_TTL_S the registry is asked
    again (a schema registered meanwhile is then accepted); an allowed id is never asked
    again."""
    monkeypatch.setattr("service.kafka.registry.NEGATIVE_TTL_S", 0.0)
    registry = _Registry({1: ["articles-value"]})
    framing = _framing(registry, output=False)
    first = await framing.classify(_records(frame(1, ARTICLE), frame(5, ARTICLE)), _Classifier())
    assert [item.reason for item in first.outgoing] == [None, DeadLetterReason.SCHEMA_ID_UNKNOWN]
    registry.subjects[5] = ["articles-value"]
    again = await framing.classify(_records(frame(1, ARTICLE), frame(5, ARTICLE)), _Classifier())
    assert [item.reason for item in again.outgoing] == [None, None]
    assert sorted(registry.lookups) == [1, 5, 5]


async def test_output_only_frames_outputs_and_leaves_dead_letters_as_received() -> None:
    """--registry-output without --registry-input: plain JSON in, framed outputs out, dead
    letters as received; the registry is never asked about input ids."""
    registry = _Registry({})
    framing = _framing(registry, RegistryInput.OFF)
    await framing.start()
    result = await framing.classify(_records(ARTICLE, b"not json"), _Classifier())
    assert [item.reason for item in result.outgoing] == [None, DeadLetterReason.INVALID_JSON]
    assert result.outgoing[0].value is not None
    assert result.outgoing[0].value.startswith(frame(42, b"{"))
    assert result.outgoing[1].value == b"not json"
    assert registry.lookups == []


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--schema-registry-username", "svc", "--schema-registry-password", "pw"),
         "Basic c3ZjOnB3"),
        (("--schema-registry-token", "tok"), "Bearer tok"),
    ],
)  # fmt: skip
async def test_registry_requests_carry_the_credentials(
    flags: tuple[str, ...], expected: str
) -> None:
    """Basic auth or a bearer token goes with every registry request."""
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json={"id": 3})

    settings = serve_settings(
        "--model", "m", "--schema-registry-url", "https://registry.example/api",
        "--registry-output", *flags,
    )  # fmt: skip
    framing = build_registry_framing(settings, transport=httpx.MockTransport(answer))
    assert framing is not None
    await framing.start()
    await framing.client.close()
    assert framing.output_id == 3
    assert seen == [expected]


def _loopback_cert(directory: Any) -> tuple[Any, Any]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "registry.key", directory / "registry.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


async def test_an_https_registry_is_verified_with_the_given_ca(tmp_path: Any) -> None:
    """--schema-registry-cafile verifies an https registry with a private CA; without it
    the same registry is refused (RegistryUnavailableError, not a dead letter)."""
    key, cert = _loopback_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    body = b'{"id": 7}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in request.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client that does not trust the certificate hangs up
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    try:
        for cafile, works in ((str(cert), True), (None, False)):
            flags = ("--schema-registry-cafile", cafile) if cafile else ()
            settings = serve_settings(
                "--model", "m", "--schema-registry-url", url, "--registry-output", *flags
            )
            framing = build_registry_framing(settings)
            assert framing is not None
            try:
                if works:
                    await framing.start()
                    assert framing.output_id == 7
                else:
                    with pytest.raises(RegistryUnavailableError, match="CERTIFICATE_VERIFY"):
                        await framing.start()
            finally:
                await framing.client.close()
    finally:
        server.close()
        await server.wait_closed()


_HEADER_VALUES = st.one_of(
    st.binary(max_size=20),
    st.integers(0, 2**32 - 1).map(lambda schema_id: frame(schema_id, b"")),
)
_VALUES = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.sampled_from([1, 2, 3, 2**32 - 1]), st.binary(max_size=32)).map(
        lambda pair: frame(*pair)
    ),
    st.just(frame(1, ARTICLE)),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            _VALUES,
            st.lists(st.tuples(st.sampled_from([VALUE_SCHEMA_ID_HEADER, "x"]), _HEADER_VALUES),
                     max_size=2),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([RegistryInput.REQUIRED, RegistryInput.OPTIONAL]),
)  # fmt: skip
def test_any_framing_gives_one_outcome_per_record_in_order(
    values: list[tuple[bytes, list[tuple[str, bytes]]]], mode: RegistryInput
) -> None:
    """Whatever the bytes and headers, each record yields exactly one output or dead letter,
    in input order; a dead letter carries the value as received."""
    registry = _Registry({1: ["articles-value"], 2: ["other-value"]})
    records = _records(*values)

    async def run() -> BatchResult:
        framing = _framing(registry, mode)
        await framing.start()
        return await framing.classify(records, _Classifier())

    result = asyncio.run(run())
    assert [item.source_offset for item in result.outgoing] == list(range(len(records)))
    for record, item in zip(records, result.outgoing, strict=True):
        if item.reason is not None:
            assert item.value == record.value
        else:
            assert item.value is not None
            assert item.value.startswith(frame(42, b"{"))


async def test_a_batch_of_new_ids_is_resolved_each_once() -> None:
    """Forty new ids in one batch: one lookup each (run concurrently), every record decided."""
    registry = _Registry({7: ["articles-value"]})
    records = _records(*[frame(schema_id, ARTICLE) for schema_id in range(40)] * 2)
    result = await _framing(registry).classify(records, _Classifier())
    assert sorted(registry.lookups) == list(range(40))
    reasons = [item.reason for item in result.outgoing]
    assert reasons.count(None) == 2
    assert reasons.count(DeadLetterReason.SCHEMA_ID_UNKNOWN) == 78


async def test_the_input_schema_id_header_is_not_forwarded_to_the_output() -> None:
    """The publisher's headers travel with the article, except __value_schema_id, which
    names the input's schema: the output has its own id; the dead letter keeps them all."""
    registry = _Registry({1: ["articles-value"]})
    headers = [(VALUE_SCHEMA_ID_HEADER, frame(1, b"")), ("traceless", b"kept")]
    records = _records((ARTICLE, headers), (b"{", headers))
    result = await _framing(registry).classify(records, _Classifier())
    output, dead = result.outgoing
    assert output.reason is None
    assert output.headers == [("traceless", b"kept")]
    assert dead.reason is DeadLetterReason.INVALID_JSON
    assert [name for name, _ in dead.headers][:2] == [VALUE_SCHEMA_ID_HEADER, "traceless"]
