"""duckdb-diffusion: latent-diffusion imputation and synthesis for DuckDB tables.

Inference needs duckdb, pyarrow, numpy and onnxruntime only; ``train`` needs the ``train``
extra (torch), imported only when called.
"""

from .api import (
    export_model,
    import_model,
    impute,
    impute_batches,
    models,
    synthesize,
    synthesize_batches,
    train,
)
from .artifact import ArtifactError
from .evaluation import evaluate
from .loading import load_model
from .registry import ModelNotFoundError
from .source import SourceError
from .sql import connect, install

__version__ = "0.1.0"
__all__ = [
    "ArtifactError",
    "ModelNotFoundError",
    "SourceError",
    "connect",
    "evaluate",
    "export_model",
    "import_model",
    "impute",
    "impute_batches",
    "install",
    "load_model",
    "models",
    "synthesize",
    "synthesize_batches",
    "train",
]
