"""Training sees a discrete value (or a spike of a continuous column) at a random normal score
inside the interval it decodes from, not at one point.

Why: the denoiser learns a continuous density. Fed point masses, it blurs them, and the blur
of a frequent value spills into its neighbours' decoding intervals (adult's 40 hours a week
lost half its rows to 39 and 41). Spread uniformly in probability over its interval, a value
is a piece of a smooth standard normal whose mass on the interval is the value's rate, which
decoding by interval (encoding.NumericTransform) returns exactly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.special import ndtr, ndtri

from ..encoding import Encoded, Encoder, numeric_values

# Probabilities stay this far inside (0, 1): the outer values' intervals are unbounded.
EDGE = 1e-6


def dequantized(encoder: Encoder, table: pa.Table, encoded: Encoded, seed: int) -> np.ndarray:
    """``encoded.num`` with every discrete or spike cell moved to a uniform-in-probability
    draw from its value's interval; other cells as they were."""
    rng = np.random.default_rng([seed, 7])
    num = encoded.num.copy()
    for j, (spec, transform) in enumerate(
        zip(encoder.numeric_columns, encoder.numeric, strict=True)
    ):
        values = numeric_values(table.column(spec.name).combine_chunks())
        observed = encoded.mask[:, j] > 0
        low, high = transform.intervals(np.where(observed, values, 0.0))
        spread = observed & (high > low)
        if not spread.any():
            continue
        p_low, p_high = ndtr(low[spread]), ndtr(high[spread])
        p = p_low + rng.random(int(spread.sum())) * (p_high - p_low)
        num[spread, j] = ndtri(np.clip(p, EDGE, 1 - EDGE))
    return num.astype(np.float32)
