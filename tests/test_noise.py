"""The counter-based noise: standard normal, independent across a row, and a function of the
row's key alone (so a synthetic table does not depend on how it was split into batches)."""

import numpy as np
from scipy import stats

from duckdb_diffusion import noise


def test_normals_are_standard_and_independent_within_a_row():
    keys = noise.ordinal_keys(3, np.arange(50_000))
    z = noise.normal(keys, 7)  # odd: the last pair's sine is dropped
    assert z.shape == (50_000, 7) and z.dtype == np.float32
    for column in z.T:
        assert stats.kstest(column, "norm").pvalue > 1e-3
    # A Box-Muller pair shares its radius: uncorrelated, but dependent if the pair were
    # generated wrongly; squares would then correlate.
    corr = np.corrcoef(np.concatenate([z, z**2], axis=1).T) - np.eye(14)
    assert np.abs(corr).max() < 0.03


def test_a_rows_noise_depends_on_its_key_only():
    keys = noise.ordinal_keys(0, np.arange(1_000))
    whole = noise.normal(keys, 60)
    parts = np.concatenate([noise.normal(keys[:301], 60), noise.normal(keys[301:], 60)])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, noise.normal(noise.ordinal_keys(1, np.arange(1_000)), 60))
    assert not np.array_equal(whole, noise.normal(keys, 60, stream=1))
