"""Counter-based Gaussian noise: the noise of a row is a function of (seed, row key) only.

A sequential random generator would make a row's imputation depend on which batch it fell in
and on which thread ran first. Here each row gets a 64-bit key (a hash of its observed content
when imputing, its ordinal when synthesizing), and every noise number is SplitMix64 of
(seed, key, draw, position) turned into a normal by Box-Muller. Same seed, same data: same
output, whatever the batch size, thread count or order of execution.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-avalanched 64-bit hash (wraps by design)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def seed_key(seed: int) -> np.uint64:
    return mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _GOLDEN)


def row_keys(seed: int, *columns: np.ndarray) -> np.ndarray:
    """One key per row from its content: each column is an array [rows, k] of any dtype."""
    rows = columns[0].shape[0]
    keys = np.full(rows, seed_key(seed), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            data = np.ascontiguousarray(column)
            words = data.view(np.uint8).reshape(rows, -1)
            pad = (-words.shape[1]) % 8
            if pad:
                words = np.pad(words, ((0, 0), (0, pad)))
            for word in np.ascontiguousarray(words).view(np.uint64).T:
                keys = mix(keys ^ word) + _GOLDEN
    return keys


def ordinal_keys(seed: int, ordinals: np.ndarray) -> np.ndarray:
    """One key per synthetic row from its ordinal in the synthetic table."""
    with np.errstate(over="ignore"):
        return mix(np.asarray(ordinals).astype(np.uint64) ^ seed_key(seed))


def uniform(keys: np.ndarray, width: int, stream: int = 0) -> np.ndarray:
    """[rows, width] uniforms in (0, 1) from row keys; ``stream`` separates independent uses."""
    with np.errstate(over="ignore"):
        counters = mix(np.arange(width, dtype=np.uint64) + np.uint64(stream) * np.uint64(1 << 32))
        bits = mix(keys[:, None] ^ counters[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def normal(keys: np.ndarray, width: int, stream: int = 0) -> np.ndarray:
    """[rows, width] standard normals (float32) by Box-Muller, both of its outputs used.

    One 64-bit hash gives a pair of 32-bit uniforms and the pair two normals (r cos t and
    r sin t, independent), so a row of ``width`` normals costs ``width / 2`` hashes, a quarter
    of the two per normal it took when noise was a tenth of synthesis time.
    """
    pairs = -(-width // 2)
    with np.errstate(over="ignore"):
        # Counters apart from every stream of ``uniform`` (which keeps below 2**31).
        high = np.uint64(stream + (1 << 31)) * np.uint64(1 << 32)
        counters = mix(np.arange(pairs, dtype=np.uint64) + high)
        bits = mix(keys[:, None] ^ counters[None, :])
    scale = np.float32(2.0**-32)
    # In (0, 1): the half keeps log away from 0; float32 holds 32-bit steps near 0 exactly.
    u1 = ((bits >> np.uint64(32)).astype(np.float32) + np.float32(0.5)) * scale
    u2 = ((bits & np.uint64(0xFFFFFFFF)).astype(np.float32) + np.float32(0.5)) * scale
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    angle = np.float32(2.0 * np.pi) * u2
    out = np.empty((len(keys), 2 * pairs), dtype=np.float32)
    out[:, 0::2] = radius * np.cos(angle)
    out[:, 1::2] = radius * np.sin(angle)
    return out[:, :width]
