"""The classification model: training, artifacts, inference and evaluation (no Kafka here)."""

from model.artifact import (
    LoadedArtifact,
    artifact_digest,
    load_artifact,
    save_artifact,
    sign_artifact,
)
from model.corpus import CorpusLoad, LineError, load_labelled
from model.errors import ArtifactError, ArtifactTrustError, CorpusError, ModelError, TrainingError
from model.evaluation import EvaluationReport, evaluate
from model.manifest import Manifest, ModelCard
from model.predictor import Predictor
from model.text import HasTitleAndBody
from model.training import TrainedModel, train
from model.trust import ArtifactTrust, generate_key_pair, trust_from_options

__all__ = [
    "ArtifactError",
    "ArtifactTrust",
    "ArtifactTrustError",
    "CorpusError",
    "CorpusLoad",
    "EvaluationReport",
    "HasTitleAndBody",
    "LineError",
    "LoadedArtifact",
    "Manifest",
    "ModelCard",
    "ModelError",
    "Predictor",
    "TrainedModel",
    "TrainingError",
    "artifact_digest",
    "evaluate",
    "generate_key_pair",
    "load_artifact",
    "load_labelled",
    "save_artifact",
    "sign_artifact",
    "train",
    "trust_from_options",
]
