"""The options a real Kafka client needs: an encrypted client key, hostname verification,
and any further aiokafka setting by name, checked against what aiokafka accepts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from conftest import only_environment, serve_settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.config.cli import settings_for
from service.config.commands import ConfigError, DatasetSettings
from service.feedback.dataset import _consumer_options
from service.kafka.clients import client_options, make_consumer, make_producer, security_kwargs

_MODEL = ("--model", "m")


def _encrypted_key_and_cert(directory: Path, password: bytes) -> tuple[Path, Path]:
    """A self-signed certificate and its private key encrypted with ``password`` (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "article-classifier")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "client.key", directory / "client.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_an_encrypted_client_key_is_opened_with_its_password_file(tmp_path: Path) -> None:
    """--ssl-key-password (here from ARTICLE_CLASSIFIER_SSL_KEY_PASSWORD_FILE) opens an
    encrypted key; the TLS context checks hostnames unless told not to."""
    key, cert = _encrypted_key_and_cert(tmp_path, b"key-pass")
    secret = tmp_path / "key-password"
    secret.write_text("key-pass\n")
    argv = (*_MODEL, "--security-protocol", "SSL", "--ssl-certfile", str(cert))
    env = {
        "ARTICLE_CLASSIFIER_SSL_KEYFILE": str(key),
        "ARTICLE_CLASSIFIER_SSL_KEY_PASSWORD_FILE": str(secret),
    }
    settings = serve_settings(*argv, env=env)
    assert "key-pass" not in repr(settings)
    assert security_kwargs(settings)["ssl_context"].check_hostname is True

    unchecked = serve_settings(*argv, "--no-ssl-check-hostname", env=env)
    assert security_kwargs(unchecked)["ssl_context"].check_hostname is False


def test_a_wrong_key_password_fails_when_the_context_is_built(tmp_path: Path) -> None:
    """A key password that does not open the key is an error, not a client without a key."""
    key, cert = _encrypted_key_and_cert(tmp_path, b"key-pass")
    settings = serve_settings(
        *_MODEL,
        "--security-protocol",
        "SSL",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--ssl-key-password",
        "not-the-pass",
    )
    with pytest.raises(OSError, match=r"(?i)bad decrypt|password|PEM"):
        security_kwargs(settings)


def test_hostname_checking_can_be_turned_off_by_variable() -> None:
    """ARTICLE_CLASSIFIER_SSL_CHECK_HOSTNAME=false turns the default check off."""
    on = serve_settings(*_MODEL)
    off = serve_settings(*_MODEL, env={"ARTICLE_CLASSIFIER_SSL_CHECK_HOSTNAME": "false"})
    assert (on.ssl_check_hostname, off.ssl_check_hostname) == (True, False)


@pytest.mark.parametrize(
    "given",
    [
        '{"metadata_max_age_ms": 60000, "fetch_min_bytes": 1024, "client_rack": "eu-1"}',
        "metadata_max_age_ms=60000, fetch_min_bytes=1024,client_rack=eu-1",
    ],
)
async def test_further_client_settings_reach_the_clients_that_accept_them(given: str) -> None:
    """--kafka-client-options as JSON or key=value pairs gives typed values; each client
    gets the settings it accepts (a consumer-only one never reaches the producer)."""
    settings = serve_settings(*_MODEL, "--kafka-client-options", given)
    assert settings.kafka_client_options == {
        "metadata_max_age_ms": 60000,
        "fetch_min_bytes": 1024,
        "client_rack": "eu-1",
    }
    assert security_kwargs(settings)["metadata_max_age_ms"] == 60000
    assert client_options(settings, "AIOKafkaConsumer") == {
        "fetch_min_bytes": 1024,
        "client_rack": "eu-1",
    }
    assert client_options(settings, "AIOKafkaProducer") == {}
    # A setting a client does not accept would be a TypeError here.
    for client in (make_consumer(settings), make_producer(settings)):
        await client.stop()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "metadata_max_age=60000",
            "not an aiokafka client setting; did you mean 'metadata_max_age_ms'",
        ),
        ('{"enable_auto_commit": true}', "'enable_auto_commit' is set by the service"),
        ("metadata_max_age_ms=soon", "metadata_max_age_ms='soon': aiokafka expects int"),
        ("check_crcs", "'check_crcs' is not key=value"),
    ],
)
def test_a_client_setting_that_cannot_work_is_refused(given: str, message: str) -> None:
    """A misspelt name (with the closest real one), a setting the service owns, a value of
    the wrong type or a pair without a value is a configuration error."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        serve_settings(*_MODEL, env={"ARTICLE_CLASSIFIER_KAFKA_CLIENT_OPTIONS": given})


def test_dataset_reads_topics_with_the_connection_options() -> None:
    """dataset honours the Kafka connection group (its bootstrap servers still optional):
    its topic reader gets the SASL credentials and further consumer settings."""
    with only_environment({"ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD": "pw"}):
        settings = settings_for(
            "dataset",
            [
                "--feedback", "f.jsonl", "--articles", "a.jsonl", "--out", "o.jsonl",
                "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "SCRAM-SHA-512",
                "--sasl-plain-username", "classifier", "--kafka-client-options",
                "fetch_min_bytes=1",
            ],
        )  # fmt: skip
    assert isinstance(settings, DatasetSettings)
    assert settings.bootstrap_servers is None
    options = _consumer_options(settings)
    assert "bootstrap_servers" not in options
    assert options["sasl_plain_username"] == "classifier"
    assert options["sasl_plain_password"] == "pw"
    assert options["fetch_min_bytes"] == 1
