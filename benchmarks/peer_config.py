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
