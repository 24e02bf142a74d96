"""Given values for conditional synthesis: checked against a model once, encoded once.

``synthesize_rows('people', 1000, given := {'income': '>50K'})`` makes rows whose ``income``
is exactly ``'>50K'`` and whose other cells come from the model's conditional distribution
given it: the given cells enter the sampler as observed tokens (the denoiser is trained on
random masks, so it samples any set of columns given the rest), nothing is rejected, and the
given value itself is written to every row. A NULL given value means "this column is NULL".

Every door checks ``given`` here, before any row is made: unknown columns, passthrough
columns, a value outside a categorical's levels or outside a numeric column's training range,
and a value that does not cast to the column's type are named errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .encoding import Encoded, numeric_values, to_arrow
from .schema import PASSTHROUGH

EXAMPLE = "given := {'income': '>50K'} in SQL, given={'income': '>50K'} in Python"


@dataclass(frozen=True)
class Given:
    """Checked given values: each column's value as a one-row Arrow array of the column's
    type (NULL included), and their encoding, one row to broadcast over a batch."""

    values: dict[str, pa.Array]
    encoded: Encoded

    def repeated(self, rows: int) -> Encoded:
        def tile(array):
            return np.repeat(array, rows, axis=0)

        return Encoded(tile(self.encoded.num), tile(self.encoded.cat), tile(self.encoded.mask))

    def column(self, name: str, rows: int) -> pa.Array | None:
        """The given column for ``rows`` rows, or None when ``name`` is not given."""
        value = self.values.get(name)
        if value is None:
            return None
        return value.take(pa.array(np.zeros(rows, dtype=np.int64)))


def parse_given(value) -> dict | None:
    """``given`` as a door passes it: None, a dict (Python), or JSON text of a struct (SQL
    sends ``to_json(given)``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise ValueError(f"parameter given must be a struct of column := value ({EXAMPLE})")
    return value


# Checked given values by (model digest, given JSON): the UDF that makes synthetic rows and
# the Spark/Ray workers get the JSON with every batch and check it once.
_CHECKED: dict[tuple[str, str], Given | None] = {}
MAX_CHECKED = 256


def checked_given(model, given_json: str | None) -> Given | None:
    """``check_given`` of ``given_json`` (as the SQL passes it), once per model and text."""
    if given_json is None:
        return None
    key = (model.artifact.digest, given_json)
    if key not in _CHECKED:
        if len(_CHECKED) >= MAX_CHECKED:
            _CHECKED.clear()
        _CHECKED[key] = check_given(model, parse_given(given_json))
    return _CHECKED[key]


def check_given(model, given: dict | None) -> Given | None:
    """``given`` (column -> value) checked against ``model`` and encoded; None if empty."""
    if not given:
        return None
    columns = {c.name: c for c in model.columns}
    modelled = [c.name for c in model.columns if c.kind != PASSTHROUGH]
    unknown = [name for name in given if name not in columns]
    if unknown:
        raise ValueError(
            f"given columns {unknown} are not columns of model {model.name!r} (its modelled "
            f"columns: {modelled})"
        )
    passed = [name for name in given if columns[name].kind == PASSTHROUGH]
    if passed:
        reasons = ", ".join(f"{n} ({columns[n].reason or 'passthrough'})" for n in passed)
        raise ValueError(
            f"given columns {passed} are passed through by model {model.name!r}, not modelled, "
            f"so nothing can be conditioned on them: {reasons}"
        )
    values = {}
    for name, value in given.items():
        values[name] = _typed(model, name, value)
    batch = pa.RecordBatch.from_arrays(
        [values.get(name, pa.nulls(1, model.schema.field(name).type)) for name in modelled],
        names=modelled,
    )
    _check_values(model, values)
    return Given(values, model.encoder.encode(batch))


def _typed(model, name: str, value) -> pa.Array:
    arrow_type = model.schema.field(name).type
    if value is None:
        return pa.nulls(1, arrow_type)
    plain = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    try:
        array = pa.array([value])
        if array.type != plain:
            array = array.cast(plain)
        return array.cast(arrow_type) if plain != arrow_type else array
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as error:
        raise ValueError(
            f"given value {value!r} for column {name!r} of model {model.name!r} does not cast "
            f"to its type {_duckdb_type(model, name)} ({error})"
        ) from None


def _check_values(model, values: dict[str, pa.Array]) -> None:
    encoder = model.encoder
    for spec, transform in zip(encoder.numeric_columns, encoder.numeric, strict=True):
        if spec.name not in values or values[spec.name].null_count:
            continue
        number = numeric_values(values[spec.name])[0]
        low, high = float(transform.knots_x[0]), float(transform.knots_x[-1])
        if not np.isfinite(number) or not low <= number <= high:
            ends = to_arrow(np.array([low, high]), values[spec.name].type).to_pylist()
            raise ValueError(
                f"given value {values[spec.name][0].as_py()!r} for column {spec.name!r} is "
                f"outside the range model {model.name!r} was trained on ({ends[0]!r} to "
                f"{ends[1]!r})"
            )
    for spec, vocab in zip(encoder.categorical_columns, encoder.vocabularies, strict=True):
        if spec.name not in values or values[spec.name].null_count:
            continue
        level = values[spec.name][0].as_py()
        if level not in vocab.levels:
            shown = ", ".join(repr(v) for v in vocab.levels[:12])
            more = f" and {len(vocab.levels) - 12} more" if len(vocab.levels) > 12 else ""
            raise ValueError(
                f"given value {level!r} for column {spec.name!r} is not one of the levels model "
                f"{model.name!r} learned: {shown}{more} (levels rarer than 0.05% of rows are "
                f"not kept)"
            )


def _duckdb_type(model, name: str) -> str:
    return next(c.duckdb_type for c in model.columns if c.name == name)
