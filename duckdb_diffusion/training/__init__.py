"""Training: the only part of duckdb-diffusion that imports torch (the ``train`` extra)."""

from ..settings import TrainConfig
from .fit import fit_artifact

__all__ = ["TrainConfig", "fit_artifact"]
