"""Training (needs the ``[train]`` extra): config, model building, the loop, schedule,
evaluation and the checkpoint file format."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .loop import Trainer, train

__all__ = ["TrainConfig", "Trainer", "evaluate", "load_checkpoint", "model_from_checkpoint",
           "save_checkpoint", "train"]
