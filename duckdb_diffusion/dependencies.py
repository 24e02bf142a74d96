"""Columns that are a function of another column (functional dependencies), kept exact.

Real tables repeat facts: a code beside its label (adult's ``education`` and
``educational-num``), a zip code beside its city. Every real row agrees; a generative model
that learns the two columns as a joint density gets most rows right and some wrong, and each
wrong row is a row no real table holds, which a detector spots at once (adult: a quarter of
synthetic rows paired an education with another level's number; dropping either column took
detection AUC from 0.72 to 0.62). So training finds, among discrete columns (categorical, or
numeric with few values), each column that another determines in the training rows, and the
model's outputs are made to agree: a derived column's cell is looked up from its source
column's value wherever the cell is made (synthesized or imputed), and, where each derived
value has one source value only (one to one), a missing source cell is looked up from an
observed derived one. Observed cells are never changed.

Everything works on codes: a categorical cell's level index, a discrete numeric cell's value
index (the interval its normal score falls in), so the lookup happens between the graph and
decoding, the same for every door.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoding import Encoder, NumericTransform

# A dependency may be broken by at most this share of the rows holding both cells (dirty
# data), and needs this many such rows and on average this many per source value to count.
TOLERANCE = 0.001
MIN_ROWS = 100
MIN_ROWS_PER_SOURCE = 10


@dataclass
class Dependency:
    """``target`` (a modelled column's position) is ``lookup[code of source]`` (-1: no rule
    for that source code, the model's value stands); ``inverse[code of target]`` is the one
    source code it comes from, or -1."""

    source: int
    target: int
    lookup: np.ndarray
    inverse: np.ndarray

    def to_json(self, names: list[str]) -> dict:
        return {
            "source": names[self.source],
            "target": names[self.target],
            "lookup": self.lookup.tolist(),
            "inverse": self.inverse.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict, names: list[str]) -> Dependency:
        return cls(
            names.index(data["source"]),
            names.index(data["target"]),
            np.asarray(data["lookup"], dtype=np.int64),
            np.asarray(data["inverse"], dtype=np.int64),
        )


class Dependencies:
    """The dependencies of one model, and how its outputs are made to follow them."""

    def __init__(self, encoder: Encoder, rules: list[Dependency]):
        self.encoder = encoder
        self.rules = rules
        self.n_numeric = len(encoder.numeric)

    def describe(self) -> list[str]:
        names = self.encoder.modelled_names
        return [f"{names[r.source]} -> {names[r.target]}" for r in self.rules]

    # -- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(cls, encoder: Encoder, num: np.ndarray, cat: np.ndarray, mask: np.ndarray):
        """The dependencies the encoded training rows hold. Finer columns (more values) are
        tried as sources first, and a derived column is never a source, so rules do not chain
        or loop: with A -> B -> C, C is derived from A directly (A determines it too)."""
        codes, sizes = _codes(encoder, num, cat)
        observed = mask > 0
        discrete = [j for j, size in enumerate(sizes) if size > 1]
        distinct = {j: len(np.unique(codes[observed[:, j], j])) for j in discrete}
        order = sorted(discrete, key=lambda j: (-distinct[j], j))
        sources: list[int] = []
        rules = []
        for target in order:
            rule = None
            for source in sources:
                rule = _rule(codes, observed, sizes, source, target)
                if rule is not None:
                    break
            if rule is None:
                sources.append(target)
            else:
                rules.append(rule)
        return cls(encoder, rules)

    def always_derived(self, num: np.ndarray, cat: np.ndarray, mask: np.ndarray) -> frozenset:
        """The derived columns whose rule covers every source value these (training) rows
        hold: ``apply`` overwrites whatever a graph makes for them, except beside a source
        value never seen in training (a level in the unseen bucket), where the network's value
        stands. So no boosted trees are fitted for them (adult's education: 154 trees, 5% of
        the impute graph's time, every output of them overwritten)."""
        codes, _ = _codes(self.encoder, num, cat)
        observed = mask > 0
        return frozenset(
            rule.target
            for rule in self.rules
            if (rule.lookup[np.unique(codes[observed[:, rule.source], rule.source])] >= 0).all()
        )

    def to_json(self) -> list[dict]:
        return [r.to_json(self.encoder.modelled_names) for r in self.rules]

    @classmethod
    def from_json(cls, encoder: Encoder, data: list[dict] | None) -> Dependencies:
        """Models stored before dependencies have none."""
        names = encoder.modelled_names
        return cls(encoder, [Dependency.from_json(d, names) for d in data or []])

    # -- applying -------------------------------------------------------------------------
    def apply(self, num_out, cat_out, num_in, cat_in, mask_in) -> tuple[np.ndarray, np.ndarray]:
        """The graph's outputs (normal scores, level indices) made to follow the rules, given
        the cells that were given (``mask_in`` 1; their values ``num_in`` / ``cat_in``): a
        missing source cell takes the one source value of its given derived cell, then every
        derived cell that was not given takes its source's value (given or made)."""
        if not self.rules:
            return num_out, cat_out
        num_out, cat_out = num_out.copy(), cat_out.copy()
        given = mask_in > 0
        for rule in self.rules:
            back = rule.inverse[self._code(rule.target, num_in, cat_in, len(rule.inverse))]
            fill = given[:, rule.target] & ~given[:, rule.source] & (back >= 0)
            self._set(num_out, cat_out, rule.source, fill, back)
        for rule in self.rules:  # derived columns are never sources: no order among rules
            source = np.where(
                given[:, rule.source],
                self._code(rule.source, num_in, cat_in, len(rule.lookup)),
                self._code(rule.source, num_out, cat_out, len(rule.lookup)),
            )
            value = rule.lookup[source]
            fill = ~given[:, rule.target] & (value >= 0)
            self._set(num_out, cat_out, rule.target, fill, value)
        return num_out, cat_out

    def _code(self, column: int, num, cat, size: int) -> np.ndarray:
        """One column's codes (``_codes``), kept inside ``size`` (cells not given are junk)."""
        if column < self.n_numeric:
            codes = np.searchsorted(self.encoder.numeric[column].edges, num[:, column])
        else:
            codes = cat[:, column - self.n_numeric]
        return np.clip(codes, 0, size - 1)

    def _set(self, num_out, cat_out, column: int, rows: np.ndarray, codes: np.ndarray) -> None:
        """Cells ``rows`` of ``column`` set to ``codes``: a discrete number to its value's
        mid-rank normal score (inside the value's interval), a category to its level."""
        if not rows.any():
            return
        if column < self.n_numeric:
            num_out[rows, column] = self.encoder.numeric[column].knots_z[codes[rows]]
        else:
            cat_out[rows, column - self.n_numeric] = codes[rows]


def _rule(codes, observed, sizes, source: int, target: int) -> Dependency | None:
    """The rule ``target = f(source)`` if the rows holding both cells follow one, else None."""
    both = observed[:, source] & observed[:, target]
    rows = int(both.sum())
    a, b = codes[both, source], codes[both, target]
    sources_seen = len(np.unique(a))
    if rows < MIN_ROWS or rows < MIN_ROWS_PER_SOURCE * sources_seen or len(np.unique(b)) < 2:
        return None
    counts = np.zeros((sizes[source], sizes[target]), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    agreeing = counts.max(axis=1)
    if rows - agreeing.sum() > TOLERANCE * rows:
        return None
    lookup = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1)
    inverse = np.full(sizes[target], -1, dtype=np.int64)
    for value in range(sizes[target]):
        origins = np.flatnonzero(lookup == value)
        if len(origins) == 1:
            inverse[value] = origins[0]
    return Dependency(source, target, lookup.astype(np.int64), inverse)


def _codes(encoder: Encoder, num: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Each modelled cell's code ([rows, columns]) and each column's number of codes: a
    discrete numeric column's value index, a categorical column's level index; a continuous
    column has one code (0), so it is never part of a rule."""
    rows = num.shape[0]
    codes = np.zeros((rows, len(encoder.modelled_names)), dtype=np.int64)
    sizes = []
    for j, transform in enumerate(encoder.numeric):
        if _is_discrete(transform):
            codes[:, j] = np.searchsorted(transform.edges, num[:, j])
            sizes.append(len(transform.knots_x))
        else:
            sizes.append(1)
    offset = len(encoder.numeric)
    codes[:, offset:] = cat
    sizes += encoder.category_sizes
    return codes, sizes


def _is_discrete(transform: NumericTransform) -> bool:
    return transform.discrete and transform.edges is not None and len(transform.knots_x) > 1
