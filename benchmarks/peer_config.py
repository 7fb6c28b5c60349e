"""What every peer of the service is told: the broker, the model, the topics and the group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One peer's settings (``peers.py`` reads them from its command line)."""

    bootstrap_servers: str
    model_dir: Path
    input_topic: str
    output_topic: str
    group_id: str
    #: Most records one batch peer classifies at once (the service's ``--batch-size``).
    batch_size: int = 256
    #: The one consumer setting every peer takes from the service (its fetch_max_wait_ms at
    #: the default --batch-max-wait-ms): with aiokafka's default of 500 ms, a fetch that
    #: finds nothing new can hold a record that arrives meanwhile for up to half a second
    #: on the embedded broker, which would measure that default rather than the peer.
    fetch_max_wait_ms: int = 50
