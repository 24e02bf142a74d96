"""Training: the only part of duckdb-diffusion that imports torch (the ``train`` extra)."""

from .fit import fit_artifact
from .trainer import TrainConfig

__all__ = ["TrainConfig", "fit_artifact"]
