"""The Schema Registry wire format end to end: a real Apicurio Registry (its Confluent-
compatible API) beside a real Apache Kafka, confluent-kafka's JSONSerializer producing the
input and its JSONDeserializer reading the service's output.

One registry for the module (started once, about 15 s). Without Java or Maven the module is
skipped with the reason, unless REQUIRE_APACHE_KAFKA=1 (CI), where it fails instead.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.common.serde import SchemaId
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import (
    REQUIRE_APACHE_KAFKA,
    Broker,
    Topics,
    http_get,
    make_settings,
    running_service,
    settle,
    wait_for,
)

from chaos.proxy import FaultProxy
from devtools.apicurio import CCOMPAT_PATH, ApicurioRegistry
from devtools.apicurio import require_tools as require_apicurio_tools
from devtools.kafka_jars import ToolMissingError
from devtools.tansu import free_port
from schemas.generate import render_schemas
from service.commands.reclassify import run_reclassify
from service.config.commands import ReclassifySettings
from service.core.framing import VALUE_SCHEMA_ID_HEADER, frame

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.parametrize("broker_engine", ["apache-kafka"], indirect=True),
]

ARTICLE_SCHEMA = render_schemas()["article-event.v1.json"]


@pytest.fixture(scope="module")
def apicurio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApicurioRegistry]:
    """One Apicurio Registry (in-memory storage) for the module."""
    try:
        require_apicurio_tools()
    except ToolMissingError as error:
        if REQUIRE_APACHE_KAFKA:
            pytest.fail(f"{error} (REQUIRE_APACHE_KAFKA=1)")
        pytest.skip(str(error))
    log = tmp_path_factory.mktemp("apicurio") / "apicurio.log"
    with ApicurioRegistry(log_file=log) as registry:
        # Shown with -s: how long the registry took to start on this machine.
        print(f"apicurio {registry.version} ready in {registry.startup_s:.1f} s")
        yield registry


def _article(index: int) -> dict[str, Any]:
    return {
        "article_id": f"r-{index}",
        "title": "Central bank holds interest rates as inflation cools",
        "body": "The central bank kept its benchmark rate unchanged on Thursday.",
    }


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, Any, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, key=key, value=value, headers=headers)
    finally:
        await producer.stop()


def _header(record: Any, name: str) -> str:
    value: bytes = dict(record.headers)[name]
    return value.decode()


async def test_confluent_clients_round_trip_through_apicurio(
    apicurio: ApicurioRegistry,
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
) -> None:
    """JSONSerializer's framed input (and an id in the __value_schema_id header) is
    classified; the output is registered under <output-topic>-value and JSONDeserializer reads
    it; an unframed value, an unknown id and an id of another subject are dead letters with
    their reasons, carrying the original bytes."""
    with SchemaRegistryClient({"url": apicurio.ccompat_url}) as client:
        await _round_trip(client, broker, topics, model_dir, predictor, apicurio.ccompat_url)


async def _round_trip(
    client: SchemaRegistryClient,
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    registry_url: str,
) -> None:
    serializer = JSONSerializer(ARTICLE_SCHEMA, client, conf={"auto.register.schemas": True})
    context = SerializationContext(topics.input, MessageField.VALUE)
    framed = [serializer(_article(index), context) for index in range(3)]
    assert framed[0][0] == 0
    input_id = int.from_bytes(framed[0][1:5], "big")
    other_id = client.register_schema(
        f"{topics.input}-other", Schema(render_schemas()["labelled-article.v1.json"], "JSON")
    )
    plain = json.dumps(_article(9)).encode()
    in_header = [(VALUE_SCHEMA_ID_HEADER, SchemaId("JSON", input_id).id_to_bytes())]
    records: list[tuple[bytes, Any, Any]] = [
        *[(f"r-{i}".encode(), value, None) for i, value in enumerate(framed)],
        (b"r-3", plain, in_header),
        (b"r-4", plain, None),
        (b"r-5", frame(987_654, plain), None),
        (b"r-6", frame(other_id, plain), None),
    ]
    await _produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        schema_registry_url=registry_url,
        registry_input="required",
        registry_output=True,
    )
    async with running_service(settings, predictor) as service:
        outputs = await settle(broker.bootstrap_servers, topics.output, 4)
        dead = await settle(broker.bootstrap_servers, topics.dead_letter, 3)
        requests = {
            (request, outcome): service.registry.get_sample_value(
                "article_classifier_schema_registry_requests_total",
                {"request": request, "outcome": outcome},
            )
            for request in ("lookup", "register")
            for outcome in ("ok", "error")
        }
    # One lookup per distinct input id (its own, the unknown one, the other subject's).
    assert requests == {
        ("register", "ok"): 1.0,
        ("register", "error"): None,
        ("lookup", "ok"): 3.0,
        ("lookup", "error"): None,
    }

    registered = client.get_latest_version(f"{topics.output}-value").schema_id
    assert registered is not None
    assert {record.value[:5] for record in outputs} == {frame(registered, b"")}
    deserializer = JSONDeserializer(None, schema_registry_client=client)
    out_context = SerializationContext(topics.output, MessageField.VALUE)
    events = {
        event["article_id"]: event
        for event in (deserializer(record.value, out_context) for record in outputs)
    }
    assert sorted(events) == ["r-0", "r-1", "r-2", "r-9"]
    assert all(event["classification"]["section"]["label"] for event in events.values())
    reasons = {record.key: _header(record, "error.reason") for record in dead}
    assert reasons == {
        b"r-4": "schema_id_missing",
        b"r-5": "schema_id_unknown",
        b"r-6": "schema_subject_refused",
    }
    by_key = {record.key: record.value for record in dead}
    assert by_key[b"r-5"] == frame(987_654, plain)
    assert str(other_id) in _header(next(r for r in dead if r.key == b"r-6"), "error.message")


async def test_an_unreachable_registry_loses_no_article(
    apicurio: ApicurioRegistry,
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
) -> None:
    """With the registry unreachable, framed articles are neither classified nor
    dead-lettered: the session restarts (cause schema_registry) and commits nothing, so a
    service that reaches the registry later classifies every one of them."""
    with SchemaRegistryClient({"url": apicurio.ccompat_url}) as client:
        input_id = client.register_schema(f"{topics.input}-value", Schema(ARTICLE_SCHEMA, "JSON"))
    plain = [json.dumps(_article(index)).encode() for index in range(5)]
    await _produce(
        broker.bootstrap_servers,
        topics.input,
        [(f"r-{i}".encode(), frame(input_id, value), None) for i, value in enumerate(plain)],
    )
    nowhere = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    down = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        schema_registry_url=nowhere,
        registry_input="required",
    )
    restarts = "article_classifier_session_restarts_total"
    async with running_service(down, predictor) as service:
        await wait_for(
            lambda: service.registry.get_sample_value(restarts, {"cause": "schema_registry"}),
            timeout_s=60,
        )
        status, _ = await http_get(service.port, "/readyz")
        assert status == 503
    assert await settle(broker.bootstrap_servers, topics.dead_letter, 0, quiet_s=0.5) == []
    assert await settle(broker.bootstrap_servers, topics.output, 0, quiet_s=0.5) == []
    up = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        schema_registry_url=apicurio.ccompat_url,
        registry_input="required",
    )
    async with running_service(up, predictor):
        outputs = await settle(broker.bootstrap_servers, topics.output, 5)
    assert sorted(json.loads(record.value)["article_id"] for record in outputs) == [
        f"r-{i}" for i in range(5)
    ]


async def test_reclassify_replays_a_framed_input(
    apicurio: ApicurioRegistry,
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
) -> None:
    """reclassify honours the same options: a framed input topic is replayed to framed
    outputs that JSONDeserializer reads."""
    with SchemaRegistryClient({"url": apicurio.ccompat_url}) as client:
        serializer = JSONSerializer(ARTICLE_SCHEMA, client, conf={"auto.register.schemas": True})
        context = SerializationContext(topics.input, MessageField.VALUE)
        await _produce(
            broker.bootstrap_servers,
            topics.input,
            [(f"r-{i}".encode(), serializer(_article(i), context), None) for i in range(6)],
        )
        live = make_settings(broker.bootstrap_servers, topics, model_dir)
        shared = {
            name: value
            for name, value in live.model_dump().items()
            if name in ReclassifySettings.model_fields
        }
        settings = ReclassifySettings(
            **{
                **shared,
                "from_beginning": True,
                "replay_group_id": f"{topics.group}-replay",
                "schema_registry_url": apicurio.ccompat_url,
                "registry_input": "required",
                "registry_output": True,
            }
        )
        status = await asyncio.wait_for(
            run_reclassify(
                settings, stop=asyncio.Event(), predictor=predictor, stderr=io.StringIO()
            ),
            120,
        )
        assert status == 0
        outputs = await settle(broker.bootstrap_servers, topics.output, 6)
        deserializer = JSONDeserializer(None, schema_registry_client=client)
        out_context = SerializationContext(topics.output, MessageField.VALUE)
        events = [deserializer(record.value, out_context) for record in outputs]
    assert sorted(event["article_id"] for event in events) == [f"r-{i}" for i in range(6)]


async def test_a_registry_outage_mid_stream_is_waited_out(
    apicurio: ApicurioRegistry,
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
) -> None:
    """The registry cut off while the service runs (a proxy in between): articles with a
    schema id not seen yet wait, nothing is dead-lettered and /readyz names the registry;
    once it is back the same service classifies them and is ready again."""
    variant = json.loads(ARTICLE_SCHEMA)
    variant["description"] = "A second version of the article schema."
    with SchemaRegistryClient({"url": apicurio.ccompat_url}) as client:
        subject = f"{topics.input}-value"
        first = client.register_schema(subject, Schema(ARTICLE_SCHEMA, "JSON"))
        second = client.register_schema(subject, Schema(json.dumps(variant), "JSON"))
    assert first != second

    def batch(schema_id: int, start: int) -> list[tuple[bytes, Any, Any]]:
        return [
            (f"r-{i}".encode(), frame(schema_id, json.dumps(_article(i)).encode()), None)
            for i in range(start, start + 3)
        ]

    restarts = "article_classifier_session_restarts_total"
    async with FaultProxy(apicurio.port) as proxy:
        settings = make_settings(
            broker.bootstrap_servers,
            topics,
            model_dir,
            schema_registry_url=f"http://{proxy.address}{CCOMPAT_PATH}",
            registry_input="required",
            registry_output=True,
        )
        async with running_service(settings, predictor) as service:
            await _produce(broker.bootstrap_servers, topics.input, batch(first, 0))
            assert len(await settle(broker.bootstrap_servers, topics.output, 3)) == 3
            proxy.partition()
            await _produce(broker.bootstrap_servers, topics.input, batch(second, 3))
            await wait_for(
                lambda: service.registry.get_sample_value(restarts, {"cause": "schema_registry"}),
                timeout_s=60,
            )
            status, body = await http_get(service.port, "/readyz")
            assert status == 503
            report = json.loads(body)
            assert "schema_registry_reachable" in report["failing"]
            assert proxy.address in report["registry_error"]
            proxy.restore()
            outputs = await settle(broker.bootstrap_servers, topics.output, 6)

            async def ready() -> bool:
                return (await http_get(service.port, "/readyz"))[0] == 200

            await wait_for(ready, timeout_s=60)
    assert await settle(broker.bootstrap_servers, topics.dead_letter, 0, quiet_s=0.5) == []
    assert sorted({record.key for record in outputs}) == [f"r-{i}".encode() for i in range(6)]
