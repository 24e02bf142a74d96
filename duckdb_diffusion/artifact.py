"""A trained model as data: ONNX graphs plus one JSON spec. Never a pickle.

The spec holds everything the runtime needs and everything a user may ask: the source's
columns and their kinds, the Arrow schema of the output, the fitted transforms, NULL rates,
the sampler's settings, training metrics, the library versions that made it, and a SHA-256 of
each graph so a damaged artifact is refused rather than run.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

FORMAT_VERSION = 1
GRAPHS = ("impute", "synthesize")
# Optional: each graph with its matrix products in 8 bits (``training.export.quantized``),
# run instead of the float one where that is exact and faster (``runtime.int8_is_exact``).
# Models stored before them, or trained with ``int8=False``, have none.
INT8_GRAPHS = tuple(f"{name}_int8" for name in GRAPHS)


def int8_name(graph: str) -> str:
    return f"{graph}_int8"


class ArtifactError(ValueError):
    """An artifact that cannot be used: damaged, incomplete, or from a newer format."""


@dataclass
class Artifact:
    spec: dict
    graphs: dict[str, bytes]
    # SHA-256 of the stored spec text, which holds the graphs' checksums: it tells two models
    # apart even when their graphs are identical (same weights, other columns or encodings).
    digest: str = ""

    @property
    def name(self) -> str:
        return self.spec["name"]

    @classmethod
    def create(cls, spec: dict, graphs: dict[str, bytes]) -> Artifact:
        spec = dict(spec)
        graphs = {name: data for name, data in graphs.items() if data is not None}
        spec["format_version"] = FORMAT_VERSION
        stored = [name for name in (*GRAPHS, *INT8_GRAPHS) if name in graphs]
        spec["graphs"] = {name: _digest(graphs[name]) for name in stored}
        artifact = cls(spec, dict(graphs))
        artifact.digest = _digest(artifact.spec_json().encode())
        return artifact

    def spec_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True, allow_nan=False)

    @classmethod
    def parse(cls, spec_json: str, graphs: dict[str, bytes], where: str) -> Artifact:
        """Rebuild and verify an artifact read from storage; ``where`` names it in errors."""
        try:
            spec = json.loads(spec_json)
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"model {where}: its spec is not valid JSON ({error})") from None
        version = spec.get("format_version")
        if not isinstance(version, int):
            raise ArtifactError(f"model {where}: its spec has no format_version")
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"model {where} was written by a newer duckdb-diffusion (format {version}; this "
                f"one reads up to {FORMAT_VERSION}): upgrade duckdb-diffusion or retrain the model"
            )
        expected_graphs = spec.get("graphs", {})
        for name in (*GRAPHS, *(n for n in INT8_GRAPHS if n in expected_graphs)):
            data = graphs.get(name)
            expected = expected_graphs.get(name)
            if data is None or expected is None or _digest(data) != expected:
                raise ArtifactError(
                    f"model {where}: its {name} graph is missing or damaged (checksum mismatch); "
                    f"retrain it"
                )
        kept = {name: graphs[name] for name in (*GRAPHS, *INT8_GRAPHS) if name in expected_graphs}
        return cls(spec, kept, spec_digest(spec_json))


def spec_digest(spec_json: str | bytes) -> str:
    """The digest of the artifact whose stored spec text this is (``Artifact.digest``): the
    spec holds every graph's checksum, so it names the graphs too, and a cache keyed by it
    can be looked up before any graph is read."""
    return _digest(spec_json if isinstance(spec_json, bytes) else spec_json.encode())


def spec_columns(spec_json: str, where: str) -> list[dict]:
    """The column specs of a stored spec, for callers that need no graphs."""
    try:
        columns = json.loads(spec_json)["columns"]
    except (TypeError, ValueError, KeyError) as error:
        raise ArtifactError(f"model {where}: its spec is damaged ({error}); retrain it") from None
    if not isinstance(columns, list):
        raise ArtifactError(f"model {where}: its spec has no column list; retrain it")
    return columns


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema as base64 of its IPC serialisation: exact types, no code."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
