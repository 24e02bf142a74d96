"""Quality measures, shared by the demo and the benchmarks: hide cells, score fills, compare
synthetic rows with real ones. Plain numpy over Arrow tables; no model code here.

Numeric errors are on z-scored values (each column divided by its standard deviation in the
true table), as in the DiffPuter and TabSyn protocols, so columns of any scale weigh alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .encoding import numeric_values

MECHANISMS = ("mcar", "mar", "mnar")
# MAR: this share of the columns (at least one) stays fully observed and drives the others'
# missingness, as in HyperImpute's and DiffPuter's protocols.
MAR_DRIVER_SHARE = 0.3
# Standard deviation of the missingness logits: how strongly values decide what is hidden.
LOGIT_SCALE = 2.0


def hide_cells(
    table: pa.Table, columns: list[str], rate: float, seed: int, mechanism: str = "mcar"
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Hide observed cells of ``columns``; return the masked table and, per column, which cells
    were hidden.

    - ``mcar``: each observed cell is hidden with probability ``rate``.
    - ``mar``: 30% of the columns stay observed; each other column's cells are hidden with a
      probability that is a logistic function of those observed columns' values.
    - ``mnar``: each column's cells are hidden with a probability that is a logistic function of
      every column's value, its own included, so what is hidden depends on what is hidden.

    Logistic masks are calibrated so that each masked column loses ``rate`` of its cells on
    average.
    """
    if not 0 < rate < 1:
        raise ValueError(f"the share of cells to hide must be between 0 and 1, got {rate}")
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown missingness mechanism {mechanism!r}; use one of {MECHANISMS}")
    rng = np.random.default_rng(seed)
    probabilities = _hide_probabilities(table, columns, rate, mechanism, rng)
    arrays, hidden = [], {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in probabilities:
            observed = column.is_valid().to_numpy(zero_copy_only=False)
            mask = observed & (rng.random(len(column)) < probabilities[name])
            hidden[name] = mask
            column = pc.if_else(pa.array(mask), pa.nulls(len(column), column.type), column)
        arrays.append(column)
    return pa.table(arrays, schema=table.schema), hidden


def _hide_probabilities(table, columns, rate, mechanism, rng) -> dict[str, np.ndarray | float]:
    if mechanism == "mcar":
        return dict.fromkeys(columns, rate)
    values = np.stack([_standard_scores(table.column(n), rng) for n in columns], axis=1)
    if mechanism == "mar":
        drivers = rng.choice(len(columns), max(1, round(MAR_DRIVER_SHARE * len(columns))), False)
        targets = [j for j in range(len(columns)) if j not in set(drivers)]
    else:
        drivers = np.arange(len(columns))
        targets = list(range(len(columns)))
    out = {}
    for j in targets:
        logits = values[:, drivers] @ rng.normal(size=len(drivers))
        logits = LOGIT_SCALE * (logits - logits.mean()) / (logits.std() or 1.0)
        out[columns[j]] = _calibrated(logits, rate)
    return out


def _standard_scores(column: pa.ChunkedArray, rng) -> np.ndarray:
    """One number per cell for the logistic masks: z-scored numbers, a random score per
    category; NULL (and NaN) cells score 0."""
    if is_numeric(column.type):
        values = numeric_values(column)
    else:
        codes, _ = category_codes(column, None)
        values = np.where(codes >= 0, rng.normal(size=codes.max() + 2)[codes], np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values))
    centred = (values - values[finite].mean()) / (values[finite].std() or 1.0)
    return np.where(finite, centred, 0.0)


def _calibrated(logits: np.ndarray, rate: float) -> np.ndarray:
    """sigmoid(logits + b) with the bias b for which the mean probability is rate."""
    return sigmoid(logits + shift_to_rate(logits, rate))


def shift_to_rate(logits: np.ndarray, rate: float) -> float:
    """The shift d with mean(sigmoid(logits + d)) = rate (bisection: monotone in d)."""
    low, high = -50.0, 50.0
    for _ in range(60):
        middle = (low + high) / 2
        if sigmoid(logits + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def imputation_scores(
    truth: pa.Table,
    filled: dict[str, np.ndarray] | pa.Table,
    hidden: dict[str, np.ndarray],
    numeric: list[str],
    categorical: list[str],
) -> dict:
    """MAE and RMSE over hidden numeric cells (z-scored), accuracy over hidden categorical cells.
    Columns with no entry in ``hidden`` (a MAR mask's fully observed drivers) are not scored."""
    errors, hits = [], []
    for name in (n for n in numeric if n in hidden):
        true = numeric_values(truth.column(name))
        std = np.nanstd(true) or 1.0
        got = _values(filled, name, numeric=True)
        errors.append(((got - true) / std)[hidden[name]])
    for name in (n for n in categorical if n in hidden):
        true = np.asarray(truth.column(name).to_pylist(), dtype=object)
        got = _values(filled, name, numeric=False)
        hits.append((got == true)[hidden[name]])
    err = np.concatenate(errors) if errors else np.zeros(0)
    hit = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    return {
        "mae": float(np.abs(err).mean()) if err.size else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if err.size else float("nan"),
        "accuracy": float(hit.mean()) if hit.size else float("nan"),
        "numeric_cells": int(err.size),
        "categorical_cells": int(hit.size),
    }


def mean_mode_fill(
    masked: pa.Table, numeric: list[str], categorical: list[str], reference: pa.Table | None = None
) -> dict:
    """The baseline everyone beats: column mean for numbers, most frequent level otherwise,
    taken from ``reference`` (default: ``masked`` itself)."""
    reference = masked if reference is None else reference
    out = {}
    for name in numeric:
        values = numeric_values(masked.column(name))
        out[name] = np.where(
            np.isnan(values), np.nanmean(numeric_values(reference.column(name))), values
        )
    for name in categorical:
        counts = pc.value_counts(reference.column(name).drop_null()).to_pylist()
        mode = max(counts, key=lambda item: item["counts"])["values"] if counts else None
        out[name] = np.asarray(masked.column(name).fill_null(mode).to_pylist(), dtype=object)
    return out


def fidelity(real: pa.Table, synthetic: pa.Table, numeric: list[str], categorical: list[str]):
    """Per column: NULL rates and a distance between real and synthetic marginals
    (Kolmogorov-Smirnov statistic for numbers, total variation for categories)."""
    rows = []
    for name in [*numeric, *categorical]:
        a, b = real.column(name), synthetic.column(name)
        row = {
            "column": name,
            "real_nulls": a.null_count / max(len(a), 1),
            "synthetic_nulls": b.null_count / max(len(b), 1),
        }
        if name in numeric:
            x, y = numeric_values(a), numeric_values(b)
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            row.update(real_mean=x.mean(), synthetic_mean=y.mean(), distance=ks_statistic(x, y))
            row["measure"] = "KS"
        else:
            row.update(distance=total_variation(a, b), measure="TV")
        rows.append(row)
    return rows


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Largest gap between the two empirical CDFs (0: same distribution, 1: disjoint)."""
    if not len(x) or not len(y):
        return float("nan")
    grid = np.sort(np.concatenate([x, y]))
    cdf_x = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    cdf_y = np.searchsorted(np.sort(y), grid, side="right") / len(y)
    return float(np.abs(cdf_x - cdf_y).max())


def total_variation(a: pa.ChunkedArray, b: pa.ChunkedArray) -> float:
    """Half the L1 distance between the two level frequencies (NULLs left out)."""
    pa_counts = {d["values"]: d["counts"] for d in pc.value_counts(a.drop_null()).to_pylist()}
    pb_counts = {d["values"]: d["counts"] for d in pc.value_counts(b.drop_null()).to_pylist()}
    na, nb = sum(pa_counts.values()) or 1, sum(pb_counts.values()) or 1
    levels = set(pa_counts) | set(pb_counts)
    return 0.5 * sum(abs(pa_counts.get(v, 0) / na - pb_counts.get(v, 0) / nb) for v in levels)


def _values(filled, name: str, numeric: bool) -> np.ndarray:
    column = filled.column(name) if isinstance(filled, pa.Table) else filled[name]
    if numeric:
        if isinstance(column, pa.ChunkedArray | pa.Array):
            return numeric_values(column)
        return np.asarray(column, dtype=float)
    if isinstance(column, pa.ChunkedArray | pa.Array):
        return np.asarray(column.to_pylist(), dtype=object)
    return np.asarray(column, dtype=object)


# -- synthesis: TabSyn's measures ----------------------------------------------------------
# Numbers are cut into this many quantile bins (of the real column) wherever a measure needs
# categories: pair trends that involve a category, and the detection classifier's features.
BINS = 10


def column_shape_error(real: pa.Table, synthetic: pa.Table, columns: list[str]) -> dict:
    """Per column, KS statistic (numbers) or total variation (categories) between the real and
    synthetic marginals; 0 means identical. NULLs are left out (their rates are reported apart)."""
    out = {}
    for name in columns:
        a, b = real.column(name), synthetic.column(name)
        if is_numeric(a.type):
            x, y = numeric_values(a), numeric_values(b)
            out[name] = ks_statistic(x[np.isfinite(x)], y[np.isfinite(y)])
        else:
            out[name] = total_variation(a, b)
    return out


def pair_trend_error(real: pa.Table, synthetic: pa.Table, columns: list[str]) -> dict:
    """Per pair of columns, how much their relation differs (0: same, 1: opposite).

    Two numbers: half the gap between the Pearson correlations. Otherwise: the total variation
    between the two joint distributions of (binned) values, NULL a level of its own."""
    out = {}
    for i, first in enumerate(columns):
        for second in columns[i + 1 :]:
            a, b = real.column(first), real.column(second)
            if is_numeric(a.type) and is_numeric(b.type):
                gap = abs(
                    _correlation(numeric_values(a), numeric_values(b))
                    - _correlation(
                        numeric_values(synthetic.column(first)),
                        numeric_values(synthetic.column(second)),
                    )
                )
                out[(first, second)] = gap / 2
            else:
                real_a, synth_a = _levels_of(a, synthetic.column(first))
                real_b, synth_b = _levels_of(b, synthetic.column(second))
                width = max(real_b.max(), synth_b.max()) + 1
                out[(first, second)] = _tv_codes(real_a * width + real_b, synth_a * width + synth_b)
    return out


def detection_auc(real: pa.Table, synthetic: pa.Table, columns: list[str], seed: int = 0) -> float:
    """Classifier two-sample test (C2ST): a small neural network learns to tell real rows from
    synthetic ones on half of each and is scored (ROC AUC) on the other half.

    0.5 means it cannot tell them apart. Features: z-scored numbers and their quantile bins,
    one-hot categories, NULL indicators, so the classifier sees shapes; its hidden layer lets it
    see broken relations between columns too, which a logistic regression (TabSyn's choice)
    cannot: rows with every column shuffled apart fool a linear classifier completely."""
    real, synthetic, y, train = _two_samples(real, synthetic, seed)
    x = np.vstack(features([real, synthetic], real, columns, bins=True))
    classify = _fit_classifier(x[train], y[train], seed)
    return roc_auc(classify(x[~train]), y[~train].astype(bool))


def detection_auc_trees(
    real: pa.Table, synthetic: pa.Table, columns: list[str], seed: int = 0
) -> float:
    """The same two-sample test with gradient-boosted trees on the raw values (numbers as they
    are, categories as codes): trees split on exact values, so they catch what a network on
    z-scores misses, e.g. numbers off their column's grid or a point mass spread out. Needs
    scikit-learn."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    real, synthetic, y, train = _two_samples(real, synthetic, seed)
    x = np.vstack(_tree_features([real, synthetic], real, columns))
    categorical = [not is_numeric(real.column(c).type) for c in columns]
    model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    model.fit(x[train], y[train])
    return roc_auc(model.predict_proba(x[~train])[:, 1], y[~train].astype(bool))


def _two_samples(real: pa.Table, synthetic: pa.Table, seed: int):
    """Equally many real and synthetic rows (label 1 and 0), and which of them a detector
    learns from: half of each; it is scored on the other halves."""
    n = min(real.num_rows, synthetic.num_rows)
    rng = np.random.default_rng(seed)
    real = real.take(rng.permutation(real.num_rows)[:n])
    synthetic = synthetic.take(rng.permutation(synthetic.num_rows)[:n])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    train = np.zeros(2 * n, dtype=bool)
    train[rng.permutation(n)[: n // 2]] = True
    train[n + rng.permutation(n)[: n // 2]] = True
    return real, synthetic, y, train


def closest_record_share(
    train: pa.Table, holdout: pa.Table, synthetic: pa.Table, columns: list[str]
) -> float:
    """Distance to closest record: the share of synthetic rows nearer to a training row than to
    any row of an equally large holdout never trained on (ties count half).

    About 0.5 when the model generalises; near 1 when it copies its training rows."""
    n = min(train.num_rows, holdout.num_rows)
    train, holdout = train.slice(0, n), holdout.slice(0, n)
    x_train, x_hold, x_synth = features([train, holdout, synthetic], train, columns, bins=False)
    near_train = nearest_distances(x_synth, x_train)[:, 0]
    near_hold = nearest_distances(x_synth, x_hold)[:, 0]
    return float(np.mean(near_train < near_hold) + 0.5 * np.mean(near_train == near_hold))


def nearest_record_distances(real: pa.Table, synthetic: pa.Table, columns: list[str]) -> dict:
    """For a model trained on all of ``real``: median distance from each synthetic row to its
    nearest real row, next to the median distance from each real row to its nearest other real
    row, and the share of synthetic rows that copy a real row exactly. A ratio well under 1 or
    many copies mean the model reproduces its training rows."""
    x_real, x_synth = features([real, synthetic], real, columns, bins=False)
    synth_near = nearest_distances(x_synth, x_real)[:, 0]
    real_near = nearest_distances(x_real, x_real, exclude_self=True)[:, 0]
    real_median = float(np.median(real_near))
    return {
        "synthetic_to_real": float(np.median(synth_near)),
        "real_to_real": real_median,
        "ratio": float(np.median(synth_near) / real_median) if real_median else float("nan"),
        "exact_copies": float(np.mean(synth_near < 1e-5)),
    }


def features(tables: list[pa.Table], reference: pa.Table, columns: list[str], bins: bool):
    """The same numeric encoding of several tables, fitted on ``reference``: z-scored numbers
    (NULL/NaN -> 0 plus an indicator), optionally their quantile-bin one-hots, one-hot
    categories (NULL and levels unseen in the reference get none)."""
    blocks = [[] for _ in tables]
    for name in columns:
        ref = reference.column(name)
        if is_numeric(ref.type):
            values = numeric_values(ref)
            finite = values[np.isfinite(values)]
            mean = finite.mean() if finite.size else 0.0
            std = (finite.std() if finite.size else 1.0) or 1.0
            edges = _bin_edges(values)
            for block, table in zip(blocks, tables, strict=True):
                x = numeric_values(table.column(name))
                missing = ~np.isfinite(x)
                block.append(np.where(missing, 0.0, (x - mean) / std)[:, None])
                block.append(missing[:, None].astype(float))
                if bins:
                    codes = np.searchsorted(edges, np.where(missing, np.inf, x), side="right")
                    block.append(np.eye(len(edges) + 1)[np.minimum(codes, len(edges))])
        else:
            for block, onehot in zip(blocks, one_hots(tables, name, ref), strict=True):
                block.append(onehot)
    return [
        np.hstack(block) if block else np.zeros((t.num_rows, 0))
        for block, t in zip(blocks, tables, strict=True)
    ]


def one_hots(tables: list[pa.Table], name: str, reference: pa.ChunkedArray) -> list[np.ndarray]:
    """Column ``name`` of each table one-hot over the reference's levels, with a last column
    for NULL and levels the reference lacks."""
    _, levels = category_codes(reference, None)
    out = []
    for table in tables:
        codes, _ = category_codes(table.column(name), levels)
        onehot = np.zeros((len(codes), len(levels) + 1))
        onehot[np.arange(len(codes)), np.where(codes >= 0, codes, len(levels))] = 1.0
        out.append(onehot)
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fit_classifier(x: np.ndarray, y: np.ndarray, seed: int, hidden: int = 64, steps: int = 400):
    """One hidden layer of ReLUs, weight decay, full-batch Adam: numpy only (the runtime has no
    scikit-learn). Returns a function from features to scores."""
    rng = np.random.default_rng(seed)
    params = [
        rng.normal(size=(x.shape[1], hidden)) * np.sqrt(2 / max(x.shape[1], 1)),
        np.zeros(hidden),
        rng.normal(size=hidden) * np.sqrt(1 / hidden),
        np.zeros(1),
    ]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(1, steps + 1):
        w1, b1, w2, b2 = params
        h = np.maximum(x @ w1 + b1, 0.0)
        error = (sigmoid(h @ w2 + b2) - y) / len(x)
        back = np.outer(error, w2) * (h > 0)
        grads = [
            x.T @ back + 1e-3 * w1,
            back.sum(0),
            h.T @ error + 1e-3 * w2,
            error.sum(keepdims=True),
        ]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            m, v = moments[i]
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g**2
            p -= 0.01 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)

    def scores(features: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = params
        return np.maximum(features @ w1 + b1, 0.0) @ w2 + b2

    return scores


def nearest_distances(
    x: np.ndarray, y: np.ndarray, k: int = 1, exclude_self: bool = False
) -> np.ndarray:
    """Euclidean distances from each row of x to its k nearest rows of y, nearest first, in
    blocks of rows (``exclude_self``: x is y, and a row is not its own neighbour)."""
    k = min(k, len(y))
    out = np.empty((len(x), k))
    y_sq = (y**2).sum(1)
    for start in range(0, len(x), 1024):
        part = x[start : start + 1024]
        d2 = (part**2).sum(1)[:, None] - 2 * part @ y.T + y_sq[None, :]
        if exclude_self:
            d2[np.arange(len(part)), np.arange(start, start + len(part))] = np.inf
        nearest = np.partition(d2, k - 1, axis=1)[:, :k] if k < len(y) else d2
        out[start : start + len(part)] = np.sqrt(np.maximum(np.sort(nearest, axis=1), 0.0))
    return out


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _levels_of(real: pa.ChunkedArray, synthetic: pa.ChunkedArray):
    """Category codes for a real column and its synthetic twin, on the real column's levels
    (numbers: its quantile bins); NULL and unseen values share the last code."""
    if is_numeric(real.type):
        edges = _bin_edges(numeric_values(real))
        coded = []
        for column in (real, synthetic):
            x = numeric_values(column)
            codes = np.searchsorted(edges, x, side="right")
            coded.append(np.where(np.isfinite(x), codes, len(edges) + 1))
        return coded[0], coded[1]
    real_codes, levels = category_codes(real, None)
    synth_codes, _ = category_codes(synthetic, levels)
    return (
        np.where(real_codes >= 0, real_codes, len(levels)),
        np.where(synth_codes >= 0, synth_codes, len(levels)),
    )


def _tv_codes(a: np.ndarray, b: np.ndarray) -> float:
    size = int(max(a.max(initial=0), b.max(initial=0))) + 1
    pa_ = np.bincount(a, minlength=size) / max(len(a), 1)
    pb_ = np.bincount(b, minlength=size) / max(len(b), 1)
    return float(0.5 * np.abs(pa_ - pb_).sum())


def _bin_edges(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros(0)
    return np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))


def category_codes(column: pa.ChunkedArray, levels: list | None) -> tuple[np.ndarray, list]:
    """Integer codes of a categorical column (-1 for NULL and for values not in ``levels``);
    without ``levels``, the column's own, most frequent first."""
    values = column.to_pylist()
    if levels is None:
        counts = pc.value_counts(column.drop_null()).to_pylist()
        levels = [d["values"] for d in sorted(counts, key=lambda d: -d["counts"])]
    index = {v: i for i, v in enumerate(levels)}
    return np.array([index.get(v, -1) for v in values], dtype=np.int64), levels


def is_numeric(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_temporal(data_type)
    ) and not pa.types.is_boolean(data_type)


def ml_efficacy(
    train: pa.Table,
    synthetic: pa.Table,
    test: pa.Table,
    columns: list[str],
    target: str,
    seed: int = 0,
) -> dict:
    """Machine-learning efficacy: a gradient-boosted model trained on real rows and one trained
    on synthetic rows, both scored on real held-out rows. Scores: ROC AUC for a two-level target,
    accuracy for more levels, R^2 for a number. Needs scikit-learn."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    except ImportError:
        raise ImportError(
            "machine-learning efficacy needs scikit-learn: pip install 'duckdb-diffusion[evaluate]'"
        ) from None
    inputs = [c for c in columns if c != target]
    x_train, x_synth, x_test = _tree_features([train, synthetic, test], train, inputs)
    categorical = [not is_numeric(train.column(c).type) for c in inputs]
    numeric_target = is_numeric(train.column(target).type)
    scores = {}
    for label, x, table in (("real", x_train, train), ("synthetic", x_synth, synthetic)):
        if numeric_target:
            y = numeric_values(table.column(target))
            keep = np.isfinite(y)
            model = HistGradientBoostingRegressor(
                categorical_features=categorical, random_state=seed
            )
            model.fit(x[keep], y[keep])
            y_test = numeric_values(test.column(target))
            ok = np.isfinite(y_test)
            predicted = model.predict(x_test[ok])
            residual = ((y_test[ok] - predicted) ** 2).sum()
            scores[label] = float(1 - residual / ((y_test[ok] - y_test[ok].mean()) ** 2).sum())
            metric = "r2"
            continue
        codes, levels = category_codes(train.column(target), None)
        y = category_codes(table.column(target), levels)[0]
        y_test = category_codes(test.column(target), levels)[0]
        keep, ok = y >= 0, y_test >= 0
        model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
        if len(np.unique(y[keep])) < 2:
            scores[label] = float("nan")  # a model cannot learn from one class
            metric = "auc" if len(levels) == 2 else "accuracy"
            continue
        model.fit(x[keep], y[keep])
        if len(levels) == 2:
            proba = model.predict_proba(x_test[ok])
            positive = list(model.classes_).index(1) if 1 in model.classes_ else None
            score = proba[:, positive] if positive is not None else np.zeros(ok.sum())
            scores[label] = roc_auc(score, y_test[ok] == 1)
            metric = "auc"
        else:
            scores[label] = float(np.mean(model.predict(x_test[ok]) == y_test[ok]))
            metric = "accuracy"
    return {"target": target, "metric": metric, **scores}


def _tree_features(tables: list[pa.Table], reference: pa.Table, columns: list[str]):
    """Numbers as floats (NaN for NULL); categories as codes of the reference's 250 most
    frequent levels (others and NULL: NaN), which gradient-boosted trees split natively."""
    out = [[] for _ in tables]
    for name in columns:
        ref = reference.column(name)
        if is_numeric(ref.type):
            for block, table in zip(out, tables, strict=True):
                block.append(numeric_values(table.column(name)))
        else:
            _, levels = category_codes(ref, None)
            for block, table in zip(out, tables, strict=True):
                codes, _ = category_codes(table.column(name), levels[:250])
                block.append(np.where(codes >= 0, codes, np.nan).astype(float))
    return [np.stack(block, axis=1) for block in out]


def association_matrix(table: pa.Table, columns: list[str], reference: pa.Table) -> np.ndarray:
    """Pairwise association for heatmaps: Pearson correlation between two numbers, Cramer's V
    (0 to 1) otherwise, numbers cut into ``reference``'s quantile bins, NULL a level."""
    size = len(columns)
    out = np.eye(size)
    for i in range(size):
        for j in range(i + 1, size):
            a, b = table.column(columns[i]), table.column(columns[j])
            if is_numeric(a.type) and is_numeric(b.type):
                value = _correlation(numeric_values(a), numeric_values(b))
            else:
                x = _levels_of(reference.column(columns[i]), a)[1]
                y = _levels_of(reference.column(columns[j]), b)[1]
                value = _cramers_v(x, y)
            out[i, j] = out[j, i] = value
    return out


def _cramers_v(x: np.ndarray, y: np.ndarray) -> float:
    _, x = np.unique(x, return_inverse=True)
    _, y = np.unique(y, return_inverse=True)
    table = np.zeros((x.max(initial=0) + 1, y.max(initial=0) + 1))
    np.add.at(table, (x, y), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / max(table.sum(), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum((table - expected) ** 2 / expected)
    k = min(table.shape) - 1
    return float(np.sqrt(chi2 / (table.sum() * k))) if k > 0 and table.sum() else 0.0


def co_missingness_error(real: pa.Table, synthetic: pa.Table, columns: list[str]) -> dict:
    """How well synthetic rows reproduce which cells are NULL together: for every pair of
    columns, |share of rows with both NULL, synthetic - real|; the mean and the worst pair,
    over pairs where either table has such rows (independent NULLs get these wrong wherever
    columns are missing together)."""

    def flags(table):
        return np.stack(
            [table.column(c).is_null().to_numpy(zero_copy_only=False) for c in columns], axis=1
        ).astype(np.float64)

    a, b = flags(real), flags(synthetic)
    both_real = a.T @ a / max(len(a), 1)
    both_synthetic = b.T @ b / max(len(b), 1)
    upper = np.triu_indices(len(columns), k=1)
    real_pairs, synthetic_pairs = both_real[upper], both_synthetic[upper]
    seen = (real_pairs > 0) | (synthetic_pairs > 0)
    gaps = np.abs(real_pairs - synthetic_pairs)[seen]
    if len(gaps) == 0:
        return {"mean": 0.0, "max": 0.0, "pairs": 0}
    worst = int(np.flatnonzero(seen)[np.argmax(gaps)])
    return {
        "mean": float(gaps.mean()),
        "max": float(gaps.max()),
        "pairs": int(len(gaps)),
        "worst_pair": [columns[upper[0][worst]], columns[upper[1][worst]]],
    }
