"""Every argument a user passes to a door (SQL, Python, CLI), checked in one place.

SQL arguments arrive as text (the macros cast them, so a NULL, a fraction or a word reaches
us instead of failing in DuckDB's binder); Python arguments arrive as objects. Both go through
the same rules, so a seed or a count that one door accepts the other accepts too.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

MAX_SEED = 2**63 - 1  # seeds are BIGINT in SQL; larger ones would collide after masking
MAX_ROWS = 10**12
MAX_DRAWS = 1000


def whole_number(name: str, value, minimum: int, maximum: int) -> int:
    """An integer argument within [minimum, maximum]: a Python int or SQL text of one."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        number = int(value)
    else:
        shown = "NULL" if value is None else repr(value)
        raise ValueError(f"parameter {name} must be a whole number, got {shown}")
    if not minimum <= number <= maximum:
        raise ValueError(f"parameter {name} must be between {minimum} and {maximum}, got {number}")
    return number


def seed(value) -> int:
    return whole_number("seed", value, 0, MAX_SEED)


def draws(value) -> int:
    return whole_number("draws", value, 0, MAX_DRAWS)


MAX_IMPUTATIONS = 100


def imputations(value, draws_value=0) -> int | None:
    """``imputations`` (1..100, or None: one completed table); it does not combine with
    ``draws``, since each imputation is one posterior draw."""
    if value is None:
        return None
    count = whole_number("imputations", value, 1, MAX_IMPUTATIONS)
    if draws(draws_value) != 0:
        raise ValueError(
            "parameters imputations and draws do not combine: each of the imputations is one "
            "posterior draw per NULL cell; drop draws (or imputations, for one averaged table)"
        )
    return count


def row_count(value, name: str = "n") -> int:
    return whole_number(name, value, 0, MAX_ROWS)


def batch_rows(value) -> int:
    return whole_number("batch_rows", value, 1, MAX_ROWS)


def seconds(value) -> float | None:
    """A time budget: a positive, finite number of seconds, or None for the default."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0 < number < math.inf:
        raise ValueError(
            f"parameter max_seconds must be a positive number of seconds, got {value!r}"
        )
    return number


def text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "NULL" if value is None else repr(value)
        raise ValueError(f"parameter {name} must be a non-empty string, got {shown}")
    return value


def column_choices(settings: dict) -> dict:
    """``settings`` with its ``categorical`` / ``passthrough`` lists checked (empty if absent)."""
    return {
        **settings,
        "categorical": column_names("categorical", settings.get("categorical", ())),
        "passthrough": column_names("passthrough", settings.get("passthrough", ())),
    }


def number(name: str, value) -> float:
    """A number passed as text by the macros (its range is the setting's, checked by
    ``settings.make_config``)."""
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(parsed):
        raise ValueError(f"parameter {name} must be a finite number, got {value!r}")
    return parsed


def settings(value) -> dict:
    """The ``settings`` parameter: a JSON object (or a dict) of training settings."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"parameter settings must be a JSON object: {error}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"parameter settings must be a JSON object, got {value!r}")
    return parsed


def column_names(name: str, value) -> list[str]:
    """A list of column names: a Python list or tuple, or JSON text (SQL applies to_json)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]  # a bare name from the CLI
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"parameter {name} must be a list of column names such as ['a', 'b'], got {value!r}"
        )
    return list(value)
