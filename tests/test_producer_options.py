"""The producer options that come from settings: --compression-type."""

from __future__ import annotations

import pytest

from service.config.cli import parse_settings
from service.config.commands import ConfigError, ServeSettings
from service.config.options import (
    CompressionType,
)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_kafka_codec_is_a_valid_compression_type(codec: str) -> None:
    """--compression-type takes each of Kafka's codec names."""
    settings = parse_settings(ServeSettings, {"model": "m", "compression_type": codec})
    assert settings.compression_type is CompressionType(codec)


def test_compression_is_off_by_default() -> None:
    """Without --compression-type outputs are produced uncompressed."""
    assert parse_settings(ServeSettings, {"model": "m"}).compression_type is CompressionType.NONE


def test_an_unknown_codec_is_refused_naming_the_option_and_value() -> None:
    """An unknown codec is a configuration error naming --compression-type and the value."""
    with pytest.raises(ConfigError, match=r"--compression-type='brotli'"):
        parse_settings(ServeSettings, {"model": "m", "compression_type": "brotli"})
