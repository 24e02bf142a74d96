"""The quality measures on cases whose answers are known: identical data, shuffled data,
independent columns, copied rows."""

import numpy as np
import pyarrow as pa
import pytest

from duckdb_diffusion import metrics

N = 4000


def correlated(seed: int, n: int = N) -> pa.Table:
    """x and y strongly correlated; level depends on x; NULLs in y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2 * x + 0.3 * rng.normal(size=n)
    level = np.where(x > 0.5, "high", np.where(x < -0.5, "low", "mid"))
    y_arr = pa.array(y, mask=rng.random(n) < 0.1)
    return pa.table({"x": x, "y": y_arr, "level": level})


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    """Each column permuted on its own: the same marginals, no relations."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {n: table.column(n).take(rng.permutation(table.num_rows)) for n in table.column_names}
    )


COLUMNS = ["x", "y", "level"]


def test_identical_data_scores_perfect():
    real = correlated(0)
    assert all(v == 0 for v in metrics.column_shape_error(real, real, COLUMNS).values())
    assert all(
        v == pytest.approx(0, abs=1e-12)
        for v in metrics.pair_trend_error(real, real, COLUMNS).values()
    )
    # the same distribution, other rows: a classifier cannot tell them apart
    assert metrics.detection_auc(real, correlated(1), COLUMNS) == pytest.approx(0.5, abs=0.05)


def test_shuffled_data_keeps_shapes_and_loses_trends():
    real = correlated(0)
    fake = shuffled(real, 1)
    assert max(metrics.column_shape_error(real, fake, COLUMNS).values()) == pytest.approx(0)
    trends = metrics.pair_trend_error(real, fake, COLUMNS)
    # correlation ~0.99 became ~0: half the gap is ~0.5
    assert trends[("x", "y")] == pytest.approx(0.5, abs=0.03)
    assert trends[("x", "level")] > 0.3
    assert metrics.detection_auc(real, fake, COLUMNS) > 0.75


def test_independent_columns_have_no_trend_to_lose():
    rng = np.random.default_rng(3)
    real = pa.table({"a": rng.normal(size=N), "b": rng.choice(["p", "q"], N)})
    trends = metrics.pair_trend_error(real, shuffled(real, 4), ["a", "b"])
    assert trends[("a", "b")] < 0.05


def test_marginal_distances_on_known_cases():
    x = np.arange(100.0)
    assert metrics.ks_statistic(x, x + 1000) == 1.0
    assert metrics.ks_statistic(x, x) == 0.0
    a = pa.chunked_array([["u"] * 3 + ["v"]])
    b = pa.chunked_array([["u"] + ["v"] * 3])
    assert metrics.total_variation(a, b) == pytest.approx(0.5)
    real = pa.table({"n": x, "c": ["u"] * 100})
    fake = pa.table({"n": x + 1000, "c": ["w"] * 100})
    assert metrics.column_shape_error(real, fake, ["n", "c"]) == {"n": 1.0, "c": 1.0}


def test_roc_auc_known_values():
    labels = np.array([True, True, False, False])
    assert metrics.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    assert metrics.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert metrics.roc_auc(np.zeros(4), labels) == 0.5


def test_closest_record_share_detects_copies():
    train, holdout = correlated(0, 2000), correlated(1, 2000)
    assert metrics.closest_record_share(train, holdout, train, COLUMNS) == 1.0
    fresh = metrics.closest_record_share(train, holdout, correlated(2, 2000), COLUMNS)
    assert 0.45 <= fresh <= 0.55
    copies = metrics.nearest_record_distances(train, train.slice(0, 500), COLUMNS)
    assert copies["exact_copies"] == 1.0 and copies["ratio"] < 1e-3
    new = metrics.nearest_record_distances(train, correlated(2, 500), COLUMNS)
    assert new["exact_copies"] == 0.0 and 0.5 < new["ratio"] < 2


def test_ml_efficacy_real_versus_useless_synthetic():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(5)
    x = rng.normal(size=N)
    table = pa.table({"x": x, "z": rng.normal(size=N), "label": np.where(x > 0, "yes", "no")})
    train, test = table.slice(0, 3000), table.slice(3000)
    useless = shuffled(train, 6)
    result = metrics.ml_efficacy(train, useless, test, ["x", "z", "label"], "label")
    assert result["metric"] == "auc"
    assert result["real"] > 0.97
    assert result["synthetic"] == pytest.approx(0.5, abs=0.1)
    regression = metrics.ml_efficacy(train, train, test, ["x", "z", "label"], "x")
    assert regression["metric"] == "r2" and regression["real"] > 0.5


@pytest.mark.parametrize("mechanism", metrics.MECHANISMS)
def test_masks_hide_the_asked_share(mechanism):
    real = correlated(0, 20000)
    masked, hidden = metrics.hide_cells(real, COLUMNS, 0.3, seed=1, mechanism=mechanism)
    assert masked.num_rows == real.num_rows
    shares = {name: mask.mean() for name, mask in hidden.items()}
    observed_y = 1 - real.column("y").null_count / real.num_rows
    for name, share in shares.items():
        expected = 0.3 * (observed_y if name == "y" else 1.0)
        assert share == pytest.approx(expected, abs=0.02), (mechanism, name)
    if mechanism == "mar":
        assert len(hidden) < len(COLUMNS)  # the driving columns stay observed
        assert all(
            masked.column(n).null_count == real.column(n).null_count
            for n in COLUMNS
            if n not in hidden
        )
    else:
        assert set(hidden) == set(COLUMNS)
    # scoring skips the columns a MAR mask leaves observed
    perfect = metrics.imputation_scores(real, real, hidden, ["x", "y"], ["level"])
    assert perfect["numeric_cells"] + perfect["categorical_cells"] == sum(
        int(m.sum()) for m in hidden.values()
    )
    for name, mask in hidden.items():  # only observed cells are hidden, and they are now NULL
        assert not (mask & real.column(name).is_null().to_numpy(zero_copy_only=False)).any()
        assert masked.column(name).is_null().to_numpy(zero_copy_only=False)[mask].all()


def test_mcar_is_blind_to_values_and_mnar_is_not():
    real = correlated(0, 20000)
    x = real.column("x").to_numpy()
    gaps = {}
    for mechanism in ("mcar", "mnar"):
        _, hidden = metrics.hide_cells(real, COLUMNS, 0.3, seed=2, mechanism=mechanism)
        gaps[mechanism] = abs(x[hidden["x"]].mean() - x[~hidden["x"]].mean())
    assert gaps["mcar"] < 0.05
    assert gaps["mnar"] > 0.3


def test_bad_mask_settings_are_named():
    real = correlated(0, 100)
    with pytest.raises(ValueError, match="mechanism 'mxar'"):
        metrics.hide_cells(real, COLUMNS, 0.3, seed=0, mechanism="mxar")
    with pytest.raises(ValueError, match="between 0 and 1"):
        metrics.hide_cells(real, COLUMNS, 1.3, seed=0)


def test_imputation_scores_of_a_perfect_fill():
    real = correlated(0, 1000)
    masked, hidden = metrics.hide_cells(real, COLUMNS, 0.3, seed=0)
    scores = metrics.imputation_scores(real, real, hidden, ["x", "y"], ["level"])
    assert scores["mae"] == 0 and scores["rmse"] == 0 and scores["accuracy"] == 1
