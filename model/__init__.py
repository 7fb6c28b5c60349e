"""The classification model: training, artifacts, inference and evaluation (no Kafka here)."""

from model.artifact import load_artifact, save_artifact
from model.corpus import CorpusLoad, LineError, load_labelled
from model.errors import ArtifactError, CorpusError, ModelError, TrainingError
from model.evaluation import EvaluationReport, evaluate
from model.manifest import Manifest, ModelCard
from model.predictor import Predictor
from model.text import HasTitleAndBody
from model.training import TrainedModel, train

__all__ = [
    "ArtifactError",
    "CorpusError",
    "CorpusLoad",
    "EvaluationReport",
    "HasTitleAndBody",
    "LineError",
    "Manifest",
    "ModelCard",
    "ModelError",
    "Predictor",
    "TrainedModel",
    "TrainingError",
    "evaluate",
    "load_artifact",
    "load_labelled",
    "save_artifact",
    "train",
]
