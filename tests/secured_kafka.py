"""A CA, certificates and SCRAM users for the secured Apache Kafka of the tests."""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context
from confluent_kafka import cimpl
from confluent_kafka.admin import AdminClient

# The ACL types are not re-exported for the type checker: import them from where they live.
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.apache_kafka import BrokerSecurity
from service.kafka.acls import BoundAcl, Pattern, Resource

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret"
CLIENT, CLIENT_PASSWORD = "article-classifier", "classifier-secret"


@dataclass(frozen=True)
class Pki:
    """The files of a test PKI: a CA, the broker's keystore, client certificates."""

    ca: Path
    keystore: Path
    client_cert: Path
    client_key: Path
    expired_cert: Path
    expired_key: Path

    def broker_security(self) -> BrokerSecurity:
        return BrokerSecurity(
            ca_file=self.ca,
            keystore=self.keystore,
            broker_subject="CN=broker",
            users={ADMIN: ADMIN_PASSWORD, CLIENT: CLIENT_PASSWORD},
            super_user=ADMIN,
        )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    valid: tuple[dt.datetime, dt.datetime],
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    """A CA and, signed by it, the broker's certificate (naming 127.0.0.1), a client
    certificate and a client certificate that expired yesterday, as PEM files."""
    now = dt.datetime.now(dt.UTC)
    current = (now - dt.timedelta(hours=1), now + dt.timedelta(days=2))
    ca_cert, ca_key = _issue("article-classifier test CA", None, valid=current, ca=True)
    issuer = (ca_cert.subject, ca_key)
    broker_cert, broker_key = _issue("broker", issuer, valid=current)
    client_cert, client_key = _issue(CLIENT, issuer, valid=current)
    expired = (now - dt.timedelta(days=3), now - dt.timedelta(days=1))
    old_cert, old_key = _issue(CLIENT, issuer, valid=expired)
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    return Pki(
        ca=write("ca.pem", pem(ca_cert)),
        keystore=write("broker.pem", _pem_key(broker_key) + pem(broker_cert) + pem(ca_cert)),
        client_cert=write("client.pem", pem(client_cert)),
        client_key=write("client.key", _pem_key(client_key)),
        expired_cert=write("expired.pem", pem(old_cert)),
        expired_key=write("expired.key", _pem_key(old_key)),
    )


def admin_kwargs(bootstrap_servers: str, pki: Pki) -> dict[str, Any]:
    """aiokafka keywords of the super user (creates topics, produces inputs, reads outputs)."""
    return {
        "bootstrap_servers": bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": ADMIN,
        "sasl_plain_password": ADMIN_PASSWORD,
        "ssl_context": create_ssl_context(
            cafile=pki.ca, certfile=pki.client_cert, keyfile=pki.client_key
        ),
    }


def client_settings(
    pki: Pki, *, password: str = CLIENT_PASSWORD, expired: bool = False
) -> dict[str, Any]:
    """The service's connection settings as the ``article-classifier`` user."""
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": CLIENT,
        "sasl_plain_password": password,
        "ssl_cafile": pki.ca,
        "ssl_certfile": pki.expired_cert if expired else pki.client_cert,
        "ssl_keyfile": pki.expired_key if expired else pki.client_key,
    }


class AclAdmin:
    """Creates and deletes ACLs for the service's principal (the admin API of librdkafka:
    aiokafka has none)."""

    def __init__(self, bootstrap_servers: str, pki: Pki) -> None:
        self._admin = AdminClient(
            {
                "bootstrap.servers": bootstrap_servers,
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": ADMIN,
                "sasl.password": ADMIN_PASSWORD,
                "ssl.ca.location": str(pki.ca),
                "ssl.certificate.location": str(pki.client_cert),
                "ssl.key.location": str(pki.client_key),
            }
        )

    def close(self) -> None:
        """Drop the librdkafka handle (it has no close) so it stops reconnecting."""
        del self._admin
        gc.collect()

    @staticmethod
    def _binding(acl: BoundAcl) -> AclBinding:
        return AclBinding(
            _RESOURCE_TYPES[acl.resource],
            acl.name,
            ResourcePatternType.PREFIXED
            if acl.pattern is Pattern.PREFIXED
            else ResourcePatternType.LITERAL,
            f"User:{CLIENT}",
            "*",
            AclOperation[acl.operation.name],
            AclPermissionType.ALLOW,
        )

    def grant(self, acls: list[BoundAcl]) -> None:
        bindings = [self._binding(acl) for acl in dict.fromkeys(acls)]  # each once
        for future in self._admin.create_acls(bindings).values():
            future.result(30)

    def revoke(self, acls: list[BoundAcl]) -> None:
        filters = [
            AclBindingFilter(
                binding.restype,
                binding.name,
                binding.resource_pattern_type,
                binding.principal,
                binding.host,
                binding.operation,
                binding.permission_type,
            )
            for binding in map(self._binding, acls)
        ]
        for future in self._admin.delete_acls(filters).values():
            future.result(30)

    def create_topics(self, partitions: dict[str, int]) -> None:
        futures = self._admin.create_topics(
            [cimpl.NewTopic(name, count, 1) for name, count in partitions.items()]
        )
        for future in futures.values():
            future.result(30)


_RESOURCE_TYPES = {
    Resource.TOPIC: ResourceType.TOPIC,
    Resource.GROUP: ResourceType.GROUP,
    Resource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID,
}
