"""Arrow batches <-> the model's arrays, through transforms fitted once and kept as plain data.

The model sees two arrays and a mask per batch:

- ``num``  float32 [rows, numeric columns]: each value mapped through its column's empirical
  quantiles onto a standard normal (robust to skew and outliers, invertible, range-bounded);
- ``cat``  int64   [rows, categorical columns]: an index into the column's vocabulary, where
  the last index is the bucket for rare levels and levels never seen in training;
- ``mask`` float32 [rows, numeric + categorical columns]: 1 where the cell is observed.

A cell is unobserved when it is NULL, or NaN/inf (which the model cannot learn from but which
imputation must leave as they are: only NULL cells are ever filled).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import arrays
from .schema import CATEGORICAL, NUMERIC, TEMPORAL, ColumnSpec

MAX_KNOTS = 1024
# A column of at most MAX_KNOTS values, each seen this often on average, is decoded as discrete.
DISCRETE_REPEATS = 5
# A value holding this share of a continuous column's rows (zero in amounts, say) is a spike.
SPIKE_SHARE = 0.01
GRID_DECIMALS = 6
# Levels rarer than this share one bucket, so the model does not spend capacity on noise.
RARE_FRACTION = 0.0005
# Privacy: a level seen in fewer rows than this is neither learned nor ever emitted, and
# numbers are clipped inside the MIN_LEVEL_ROWS-th smallest and largest values (top- and
# bottom-coding), so a model neither stores nor reproduces one row's rare level or extreme.
MIN_LEVEL_ROWS = 5
MAX_LEVELS = 256
# A continuous column has at most one knot per this many rows (see _quantile_knots).
ROWS_PER_KNOT = 10


@dataclass
class Encoded:
    num: np.ndarray
    cat: np.ndarray
    mask: np.ndarray


class NumericTransform:
    """Quantile-normal transform of one numeric or temporal column (a monotone lookup table).

    Real columns are seldom continuous: counts, ages and prices sit on a grid (integers, two
    decimals, multiples of 100) and many columns take a few dozen values. A transform learns
    which: a *discrete* column (at most ``MAX_KNOTS`` values, each seen ``DISCRETE_REPEATS``
    times on average) owns an interval of normal scores per value (its share of the rows), a
    score decodes to the value whose interval holds it, and training sees each cell at a random
    score inside its value's interval (``intervals``; training/dequantize.py), so the model
    learns a continuous density whose mass per interval is the value's rate: synthetic values
    are training values, at the rates the model gives them. (Decoding to the nearest mid-rank
    score, with every cell encoded at that point, smeared a frequent value onto its narrow
    neighbours: adult's 40 hours a week, 47% of rows, came out 21%, with 19% at 39 and 41.)
    Models stored before intervals (no ``edges``) decode to the nearest mid-rank score. Any
    other column decodes by interpolation, a *spike* (a value holding ``SPIKE_SHARE`` of its
    rows, like the zeros of an amount) from its whole probability interval, and is rounded
    onto its *grid* (offset + k * step), if it has one.
    """

    def __init__(
        self,
        knots_x,
        knots_z,
        integral: bool,
        scale: int | None = None,
        discrete: bool = False,
        grid: dict | None = None,
        spikes: list | None = None,
        edges: list | None = None,
    ):
        self.knots_x = np.asarray(knots_x, dtype=np.float64)
        self.knots_z = np.asarray(knots_z, dtype=np.float64)
        self.integral = integral
        self.scale = scale
        self.discrete = discrete
        self.grid = grid  # {"offset", "step", "decimals"} or None
        # Values holding SPIKE_SHARE of a continuous column or more, with the normal scores
        # where their probability interval starts and ends: [value, z_low, z_high].
        self.spikes = [list(map(float, s)) for s in spikes] if spikes else []
        # Discrete columns: the normal scores between consecutive values' intervals.
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self._inverse = self._inverse_knots()

    @classmethod
    def fit(cls, values: np.ndarray, integral: bool, scale: int | None = None):
        values = np.sort(values[np.isfinite(values)])
        unique, counts = np.unique(values, return_counts=True)
        discrete = 1 < len(unique) <= MAX_KNOTS and len(values) >= DISCRETE_REPEATS * len(unique)
        if discrete:
            values = _rare_values_merged(values, unique, counts)
            unique, counts = np.unique(values, return_counts=True)
        # Mid-rank probability of each distinct value; ties share one normal score.
        upper = np.cumsum(counts)
        prob = (upper - counts / 2.0) / len(values)
        eps = 0.5 / max(len(values), 1)
        ppf = NormalDist().inv_cdf
        grid = None if discrete else value_grid(unique)
        spiked = [] if discrete else np.flatnonzero(counts >= SPIKE_SHARE * len(values))

        def score(p: float) -> float:
            return ppf(min(max(p, eps), 1 - eps))

        spikes = [
            [
                float(unique[i]),
                score((upper[i] - counts[i]) / len(values)),
                score(upper[i] / len(values)),
            ]
            for i in spiked
        ]
        edges = [score(u / len(values)) for u in upper[:-1]] if discrete else None
        # (Fewer than 2 x ROWS_PER_KNOT rows, and so fewer than MAX_KNOTS values: a knot each.)
        if not discrete and len(values) >= 2 * ROWS_PER_KNOT:
            unique, prob = _quantile_knots(values, unique[spiked], prob[spiked])
        z = np.array([score(p) for p in prob])
        if len(unique) == 1:
            z = np.zeros(1)
        unique, z, edges = _top_and_bottom_coded(values, unique, z, edges)
        spikes = [s for s in spikes if unique[0] <= s[0] <= unique[-1]]
        return cls(unique, z, integral, scale, discrete, grid, spikes, edges)

    def _inverse_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The knots decoding uses: a spike's one knot (its mid-rank score) becomes two, at
        the ends of its probability interval, so every score in it decodes to the value
        itself (with one knot, only the scores below it did: a column with 20% zeros came
        out with about 10%) and the continuous part resumes where the interval ends."""
        if not self.spikes:
            return self.knots_z, self.knots_x
        ends = {value: (low, high) for value, low, high in self.spikes}
        xs, zs = [], []
        for x, z in zip(self.knots_x, self.knots_z, strict=True):
            if x in ends:
                xs += [x, x]
                zs += list(ends[x])
            else:
                xs.append(x)
                zs.append(z)
        return np.maximum.accumulate(np.asarray(zs)), np.asarray(xs)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if len(self.knots_x) == 1:
            return np.zeros_like(x)
        return np.interp(x, self.knots_x, self.knots_z)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        if len(self.knots_x) == 1:
            return np.full_like(z, self.knots_x[0], dtype=np.float64)
        if self.discrete:
            if self.edges is not None:
                return self.knots_x[np.searchsorted(self.edges, z)]
            midpoints = (self.knots_z[1:] + self.knots_z[:-1]) / 2
            return self.knots_x[np.searchsorted(midpoints, z)]
        knots_z, knots_x = self._inverse
        return np.interp(z, knots_z, knots_x)

    def intervals(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The normal scores each value decodes from, as [low, high]: a discrete value's or a
        spike's whole interval (the ends of the outer values' intervals are infinite), a
        single score (low == high) for any other value."""
        z = self.forward(x)
        low, high = z.copy(), z.copy()
        if self.discrete and self.edges is not None and len(self.edges):
            i = np.clip(np.searchsorted(self.knots_x, x), 0, len(self.knots_x) - 1)
            bounds = np.concatenate([[-np.inf], self.edges, [np.inf]])
            low, high = bounds[i], bounds[i + 1]
        for value, z_low, z_high in self.spikes:
            at = x == value
            low[at], high[at] = z_low, z_high
        return low, high

    def finish(self, x: np.ndarray) -> np.ndarray:
        """Round a value in data space as the column's grid and type require."""
        if self.grid is not None:
            offset, step = self.grid["offset"], self.grid["step"]
            x = np.round(offset + np.round((x - offset) / step) * step, self.grid["decimals"])
        if self.integral:
            return np.round(x)
        if self.scale is not None:
            return np.round(x, self.scale)
        return x

    def to_json(self) -> dict:
        return {
            "knots_x": self.knots_x.tolist(),
            "knots_z": self.knots_z.tolist(),
            "integral": self.integral,
            "scale": self.scale,
            "discrete": self.discrete,
            "grid": self.grid,
            "spikes": self.spikes,
            "edges": None if self.edges is None else self.edges.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict):
        return cls(
            data["knots_x"],
            data["knots_z"],
            data["integral"],
            data.get("scale"),
            data.get("discrete", False),  # models stored before grids have none of these
            data.get("grid"),
            data.get("spikes"),
            data.get("edges"),  # models stored before intervals decode to the nearest score
        )


def _rare_values_merged(values: np.ndarray, unique: np.ndarray, counts: np.ndarray):
    """A discrete column's values with each value seen in fewer than ``MIN_LEVEL_ROWS`` rows
    moved to the nearest value seen more often: a value one row owns is then neither stored
    nor emitted (as rare category levels are not), and its rows' share goes to a neighbour."""
    kept = unique[counts >= MIN_LEVEL_ROWS]
    if len(kept) == len(unique) or not len(kept):
        return values
    right = np.clip(np.searchsorted(kept, values), 0, len(kept) - 1)
    left = np.clip(right - 1, 0, len(kept) - 1)
    nearer_left = np.abs(values - kept[left]) <= np.abs(kept[right] - values)
    return np.where(nearer_left, kept[left], kept[right])


def _quantile_knots(values: np.ndarray, spike_x: np.ndarray, spike_prob: np.ndarray):
    """A continuous column's knots: values at evenly spaced probabilities, one per
    ``ROWS_PER_KNOT`` rows at most, interpolated between order statistics, plus each spike
    at its mid-rank probability. Knots at every training value made the decoded density peak
    at the training rows themselves (the density between neighbouring rows is 1 / (n x gap),
    and a row borders its own gaps while a new value falls in a gap that is larger on
    average): a membership signal in every continuous column of a small table."""
    n = len(values)
    count = int(np.clip(n // ROWS_PER_KNOT, 2, MAX_KNOTS))
    prob = np.linspace(MIN_LEVEL_ROWS / n, 1 - MIN_LEVEL_ROWS / n, count)
    x = np.quantile(values, prob)
    keep = ~np.isin(x, spike_x)
    x, prob = np.r_[x[keep], spike_x], np.r_[prob[keep], spike_prob]
    # Ties (a value spanning several probabilities) become one knot at their mean probability.
    x, inverse = np.unique(x, return_inverse=True)
    prob = np.bincount(inverse, prob) / np.bincount(inverse)
    return x, prob


def _top_and_bottom_coded(values: np.ndarray, knots_x, knots_z, edges):
    """The knots without the values below the ``MIN_LEVEL_ROWS``-th smallest value or above the
    ``MIN_LEVEL_ROWS``-th largest: those scores decode to the kept end values (a discrete
    column's end value takes over the dropped values' intervals), and the stored knots hold no
    extreme a handful of rows own. Columns with fewer than 2 x MIN_LEVEL_ROWS values keep all."""
    if len(values) < 2 * MIN_LEVEL_ROWS or len(knots_x) < 3:
        return knots_x, knots_z, edges
    low, high = values[MIN_LEVEL_ROWS - 1], values[-MIN_LEVEL_ROWS]
    first = int(np.searchsorted(knots_x, low, side="left"))
    last = int(np.searchsorted(knots_x, high, side="right"))
    if last - first < 2:
        return knots_x, knots_z, edges
    kept_edges = None if edges is None else list(edges[first : last - 1])
    return knots_x[first:last], knots_z[first:last], kept_edges


def value_grid(unique: np.ndarray) -> dict | None:
    """The grid a column's distinct values lie on: the fewest decimals that write every value
    exactly, and the largest step (in those units) that all gaps between values are multiples
    of, from the smallest value. None when no grid up to ``GRID_DECIMALS`` decimals fits."""
    if len(unique) < 3 or np.abs(unique).max() * 10**GRID_DECIMALS >= 2**53:
        return None
    for decimals in range(GRID_DECIMALS + 1):
        scaled = unique * 10.0**decimals
        whole = np.round(scaled)
        if np.all(np.abs(scaled - whole) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            step = int(np.gcd.reduce(np.diff(whole.astype(np.int64))))
            if step <= 0:
                return None
            return {
                "offset": float(unique[0]),
                "step": step / 10.0**decimals,
                "decimals": decimals,
            }
    return None


class Vocabulary:
    """Levels of one categorical column; index ``len(levels)`` is the rare/unseen bucket."""

    def __init__(self, levels: list, rare_fill):
        self.levels = list(levels)
        self.rare_fill = rare_fill
        # Arrow arrays of the levels by type, made once: every batch looks codes up in them.
        self._arrays: dict[tuple[str, pa.DataType], pa.Array] = {}

    def _array(self, role: str, arrow_type: pa.DataType) -> pa.Array:
        """The levels (``role`` "levels") or levels plus the rare fill ("table") as Arrow."""
        found = self._arrays.get((role, arrow_type))
        if found is None:
            values = self.levels if role == "levels" else [*self.levels, self.rare_fill]
            found = self._arrays[role, arrow_type] = arrays.of_values(values, arrow_type)
        return found

    @property
    def size(self) -> int:
        return len(self.levels) + 1

    @classmethod
    def fit(cls, array: pa.Array):
        counts = pc.value_counts(_plain(array).drop_null()).to_pylist()
        counts.sort(key=lambda item: (-item["counts"], str(item["values"])))
        total = sum(item["counts"] for item in counts)
        keep, rare = [], []
        for item in counts:
            enough = max(MIN_LEVEL_ROWS, RARE_FRACTION * total)
            frequent = item["counts"] >= enough or len(counts) <= 2
            (keep if frequent and len(keep) < MAX_LEVELS else rare).append(item["values"])
        # What the rare bucket decodes to: its most frequent level if enough rows hold it
        # (levels beyond MAX_LEVELS), else the most frequent level, never a level of a few rows
        # (a column with no level that frequent keeps its most frequent one).
        seen = {item["values"]: item["counts"] for item in counts}
        if rare and (seen[rare[0]] >= MIN_LEVEL_ROWS or not keep):
            rare_fill = rare[0]
        else:
            rare_fill = keep[0] if keep else None
        return cls(keep, rare_fill)

    def index(self, array: pa.Array) -> np.ndarray:
        plain = _plain(array)
        if not self.levels:
            return np.full(len(plain), len(self.levels), dtype=np.int64)
        idx = pc.index_in(plain, value_set=self._array("levels", plain.type))
        return np.where(arrays.valid(idx), arrays.values(idx), len(self.levels)).astype(np.int64)

    def values(self, idx: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
        table = self._array("table", _plain_type(arrow_type))
        taken = table.take(arrays.arrow(np.asarray(idx, dtype=np.int64)))
        return taken.cast(arrow_type) if taken.type != arrow_type else taken

    def to_json(self) -> dict:
        return {"levels": self.levels, "rare_fill": self.rare_fill}

    @classmethod
    def from_json(cls, data: dict):
        return cls(data["levels"], data["rare_fill"])


class Encoder:
    """Each modelled column's transform, in model order: numeric columns, then categorical."""

    def __init__(self, columns: list[ColumnSpec], numeric: list, vocabularies: list):
        self.columns = columns
        self.numeric_columns = [c for c in columns if c.kind in (NUMERIC, TEMPORAL)]
        self.categorical_columns = [c for c in columns if c.kind == CATEGORICAL]
        self.numeric = numeric
        self.vocabularies = vocabularies

    @property
    def modelled_names(self) -> list[str]:
        return [c.name for c in (*self.numeric_columns, *self.categorical_columns)]

    @property
    def category_sizes(self) -> list[int]:
        return [v.size for v in self.vocabularies]

    @classmethod
    def fit(cls, table: pa.Table, columns: list[ColumnSpec]) -> Encoder:
        numeric, vocabularies = [], []
        for spec in columns:
            array = table.column(spec.name).combine_chunks()
            if spec.kind in (NUMERIC, TEMPORAL):
                numeric.append(
                    NumericTransform.fit(
                        numeric_values(array), spec.integral, decimal_scale(array.type)
                    )
                )
            elif spec.kind == CATEGORICAL:
                vocabularies.append(Vocabulary.fit(array))
        return cls(columns, numeric, vocabularies)

    def encode(self, batch: pa.RecordBatch | pa.Table) -> Encoded:
        rows = batch.num_rows
        num = np.zeros((rows, len(self.numeric)), dtype=np.float32)
        cat = np.zeros((rows, len(self.vocabularies)), dtype=np.int64)
        mask = np.zeros((rows, len(self.numeric) + len(self.vocabularies)), dtype=np.float32)
        for j, (spec, transform) in enumerate(zip(self.numeric_columns, self.numeric, strict=True)):
            values = numeric_values(_column(batch, spec.name))
            observed = np.isfinite(values)
            num[:, j] = np.where(observed, transform.forward(np.where(observed, values, 0)), 0)
            mask[:, j] = observed
        offset = len(self.numeric)
        for j, (spec, vocab) in enumerate(
            zip(self.categorical_columns, self.vocabularies, strict=True)
        ):
            array = _column(batch, spec.name)
            observed = ~_null_mask(array)
            cat[:, j] = np.where(observed, vocab.index(array), 0)
            mask[:, offset + j] = observed
        return Encoded(num, cat, mask)

    def null_cells(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """[modelled columns, rows] True where a cell is NULL (what imputation fills; an
        infinite number is a value, unlike in ``encode``'s mask). Column by column, as the
        callers read it: reductions over a row's columns then run down contiguous memory
        (adult, 2,048 rows: ~10 against ~140 us a batch for the rows and columns with NULLs)."""
        names = self.modelled_names
        if not names:
            return np.zeros((0, batch.num_rows), dtype=bool)
        return np.stack([_null_mask(_column(batch, name)) for name in names])

    def decode_numeric(self, z: np.ndarray) -> np.ndarray:
        """Normal scores [..., numeric columns] -> values in data space (not yet rounded)."""
        out = np.empty(z.shape, dtype=np.float64)
        for j, transform in enumerate(self.numeric):
            out[..., j] = transform.inverse(z[..., j].astype(np.float64))
        return out

    def to_json(self) -> dict:
        return {
            "numeric": [t.to_json() for t in self.numeric],
            "categorical": [v.to_json() for v in self.vocabularies],
        }

    @classmethod
    def from_json(cls, columns: list[ColumnSpec], data: dict) -> Encoder:
        numeric = [NumericTransform.from_json(d) for d in data["numeric"]]
        vocabularies = [Vocabulary.from_json(d) for d in data["categorical"]]
        return cls(columns, numeric, vocabularies)


def numeric_values(array: pa.Array) -> np.ndarray:
    """Any numeric/temporal Arrow array -> float64 with NaN where NULL.

    DuckDB's infinite dates and timestamps arrive as the extreme integers of their storage;
    they become ±inf, so (like a DOUBLE's inf) they are kept as values but never learned from.
    """
    array = _plain(array)
    kind = array.type
    infinity = None
    if pa.types.is_date32(kind):
        array, infinity = array.cast(pa.int32()), 2**31 - 1
    elif pa.types.is_date64(kind) or pa.types.is_timestamp(kind):
        array, infinity = array.cast(pa.int64()), 2**63 - 1
    elif pa.types.is_boolean(kind):
        array = array.cast(pa.int8())
    floats = array.cast(pa.float64(), safe=False)
    values = np.where(arrays.valid(floats), arrays.values(floats), np.nan)
    if infinity is not None:
        values[values >= float(infinity)] = np.inf
        values[values <= -float(infinity)] = -np.inf
    return values


def to_arrow(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """Rounded float64 values -> an Arrow array of the column's own type."""
    if pa.types.is_integer(arrow_type):
        info = np.iinfo(arrays.numpy_type(arrow_type))
        # float64 rounds 2**63 - 1 up to 2**63, which overflows int64: clip below it.
        top = float(info.max) if float(info.max) <= info.max else np.nextafter(float(info.max), 0)
        clipped = np.clip(values, float(info.min), top)
        return arrays.arrow(clipped.astype(np.int64 if info.min < 0 else np.uint64)).cast(
            arrow_type
        )
    if pa.types.is_date32(arrow_type):
        return arrays.arrow(values.astype(np.int32)).cast(arrow_type)
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date64(arrow_type):
        return arrays.arrow(values.astype(np.int64)).cast(arrow_type)
    if pa.types.is_decimal(arrow_type):
        return arrays.arrow(np.asarray(values, dtype=np.float64)).cast(arrow_type, safe=False)
    return arrays.arrow(np.asarray(values, dtype=np.float64)).cast(arrow_type)


def decimal_scale(arrow_type: pa.DataType) -> int | None:
    return arrow_type.scale if pa.types.is_decimal(arrow_type) else None


def fill_nulls(original: pa.Array, filled: pa.Array) -> pa.Array:
    """Keep every non-NULL cell of ``original`` as it is; take ``filled`` where it is NULL."""
    if original.null_count == 0:
        return original
    return pc.coalesce(original, filled)


def _column(batch, name: str) -> pa.Array:
    column = batch.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _null_mask(array: pa.Array) -> np.ndarray:
    return ~arrays.valid(array)


def _plain(array: pa.Array) -> pa.Array:
    """Dictionary (ENUM) arrays as their value type, so lookups compare values."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        return array.dictionary_decode()
    return array


def _plain_type(arrow_type: pa.DataType) -> pa.DataType:
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
