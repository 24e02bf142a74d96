"""The NULL chain (missingness.py): its draws equal those of the features' product."""

from __future__ import annotations

import numpy as np

from duckdb_diffusion.missingness import Missingness, NullModel


def test_draws_equal_those_of_the_features_times_the_weights():
    """Every kind of term (numeric values, categorical levels, NULL indicators), a column given
    as NULL: the same flags as building each model's one-hot features and multiplying."""
    rng = np.random.default_rng(0)
    numeric, sizes, rows = 3, [4, 2, 7], 500
    num = rng.standard_normal((rows, numeric)).astype(np.float32)
    cat = np.stack([rng.integers(0, k, rows) for k in sizes], axis=1)
    shapes = [([0, 3, 2, 5], [1, 4]), ([4], []), ([], [0, 2]), ([1, 5, 3], [])]
    models = []
    for target, (values, indicators) in enumerate(shapes):
        width = sum(1 if i < numeric else sizes[i - numeric] for i in values) + len(indicators)
        models.append(NullModel(target, values, indicators, rng.standard_normal(width), 0.3))
    chain = Missingness(models, numeric, sizes)
    # The chain: each model sees the NULLs drawn before it, as the one-hot features would.
    uniforms = rng.random((rows, numeric + len(sizes)))
    drawn = chain.draw(num, cat, uniforms, {1: True})
    want = np.zeros(uniforms.shape, dtype=bool)
    want[:, 1] = True
    for model in chain.chain:
        if model.target != 1:
            features = chain.features(num, cat, want, model.values, model.indicators)
            probability = 1 / (1 + np.exp(-(features @ model.weights + model.bias)))
            want[:, model.target] = uniforms[:, model.target] < probability
    np.testing.assert_array_equal(drawn, want)
    # A row's flags do not depend on the rows drawn with it.
    part = chain.draw(num[137:300], cat[137:300], uniforms[137:300], {1: True})
    np.testing.assert_array_equal(part, drawn[137:300])
