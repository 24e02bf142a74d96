"""Gradient-boosted trees for categorical and numeric cells, fitted beside the networks and
exported as ONNX ``TreeEnsemble`` nodes.

Why: a categorical cell is often decided by exact rules on other cells (a repayment status
by the previous month's status, a coastline class by a longitude threshold) that a tree
finds in one split and an MLP over latent tokens only approximates. Alone, boosted trees
impute categories about as well as MissForest; multiplied with the point predictor's
probabilities (a product of experts: their log-probabilities add), they beat both.

One scikit-learn ``HistGradientBoostingClassifier`` per categorical column learns that
column from every other cell of the row (not a column another determines, whose cells the
model's dependencies always look up: ``Dependencies.always_derived``). Unobserved cells are
NaN, which the trees route with learned defaults, so one model serves every pattern of
missing cells. Category codes are categorical features (set splits; ``trees_graph`` says
how they are exported). The number of boosting rounds is chosen on the validation rows;
training stops when its share of the budget is spent. Once the point predictor is trained,
each column's rounds, and the levels whose trees a round keeps, are cut to what the product
with it needs (``category_rounds``): every round is a tree per level to walk. Where the
predictor is confident enough its choice stands without the trees (``_confidence_gate``).

Numeric cells get the same treatment with absolute-error regressors (their optimum is the
median, as the point predictor's): the imputed value is a blend of the predictor's median and
the trees', with each column's weight chosen on validation cells (``blend_weights``), so a
column where trees do not help keeps the predictor's value.

The graph computes the same features from its (num, cat, mask) inputs, so the trees add no
input: ``tree_margins`` and ``tree_medians`` are inputs of the exported torch graph that
``attach`` replaces with the ensembles' outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 5  # TreeEnsemble
MARGINS = "tree_margins"
MEDIANS = "tree_medians"
SURE = "tree_sure"  # [batch, categorical columns]: where the predictor's choice stands alone
BLEND_STEPS = 11  # candidate weights of the trees' median: 0, 0.1, ..., 1
# A boosting round fits one tree per level: columns with more levels are left to the networks.
MAX_LEVELS = 64
# HistGradientBoosting bins values in 255 bins: a categorical feature must fit in them.
MAX_CATEGORICAL_FEATURE_LEVELS = 255
# A leaf needs MIN_LEAF rows, so fewer than twice that cannot be split: no trees then.
MIN_LEAF = 20
# Each round's step. 0.2 against 0.1 (adult, the speed table, a new model each run): half
# the rounds, 357-395 category and 101-121 numeric trees against 580 and 166, the trees'
# walks 2,448-2,532 against 4,267 ns a row, accuracy on the NULL category cells 0.7780 /
# 0.7787 against 0.7780; california and default (5,000 rows, 30% MCAR, held out) MAE /
# accuracy 0.307 / 0.833 and 0.249 / 0.779 against 0.306 / 0.833 and 0.255 / 0.777.
LEARNING_RATE = 0.2
ROUNDS_PER_CHUNK = 10
MAX_ROUNDS = 200
STALE_CHUNKS = 2
# Leaves per tree (scikit-learn's default is 31). Every round is a tree per level, and a
# round of 63-leaf trees does what more rounds of 31 did, so fewer trees are walked for the
# same accuracy: adult, the speed table, three models each (``trees_cost.py``): category
# trees 413 / 454 / 436 -> 280 / 339 / 233, the walks 2,863 / 2,780 / 2,589 -> 2,274 / 2,639
# / 1,716 ns a row, accuracy on the NULL category cells 0.7786 / 0.7795 / 0.7787 -> 0.7786 /
# 0.7783 / 0.7784; california, adult and default (5,000 rows, MCAR and MAR, held out) MAE
# within 0.002 and accuracy -0.005 ... +0.015 (benchmarks/README.md, speed pass of
# 2026-12-06, day: "63 leaves a tree instead of 31").
# Capping the depth instead (6, 5: one model each) made more trees for no cheaper walks
# (2,743, 3,082 ns a row); 15 leaves, more trees for 2,429 ns.
MAX_LEAF_NODES = 63
# Accuracy (plus twice its standard error) a category column's trees may give up on
# validation cells for fewer rounds (category_rounds).
ROUNDS_TOLERANCE = 0.002
# Fewer validation cells than this and a column's rounds are all kept (california, 5,000
# rows: ~300 cells saw no difference between 38 and 41 rounds, yet the cut cost 0.8 points).
ROUNDS_MIN_CELLS = 2000
# The predictor's probability for its choice at or above which a category column's trees may
# be skipped, tried from the most confident down (``_confidence_gate``); a gate must skip at
# least GATE_MIN_SHARE of the validation cells to be worth its nodes.
GATE_LEVELS = (0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
GATE_MIN_SHARE = 0.05
# Log-odds given to levels a column never showed in training: never predicted by the trees.
ABSENT = -30.0
BRANCH_LEQ = 0
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class ColumnTrees:
    """One column's boosted trees, already cut to their best number of rounds: a classifier
    for a categorical column, an absolute-error regressor for a numeric one."""

    column: int  # index among the categorical (or the numeric) columns
    features: np.ndarray  # which columns of ``features(...)`` it reads
    classifier: object  # a fitted HistGradientBoostingClassifier (or ...Regressor)
    numeric: bool = False
    weight: float = 0.0  # numeric: the trees' share of the imputed median (blend_weights)
    # categorical: levels whose trees were cut (``category_rounds``); they keep their start
    dropped: frozenset = frozenset()
    # categorical: the predictor's probability for its choice at or above which that choice
    # stands without the trees (``_confidence_gate``); None: the trees always run
    confident: float | None = None


def features(num: np.ndarray, cat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Numbers (encoded) then category codes, NaN where a cell is not observed."""
    values = np.concatenate([num, cat.astype(np.float32)], axis=1)
    return np.where(mask > 0, values, np.nan).astype(np.float32)


def fit_trees(
    num: np.ndarray,
    cat: np.ndarray,
    mask: np.ndarray,
    category_sizes: list[int],
    fit_rows: np.ndarray,
    val_rows: np.ndarray,
    seconds: float,
    seed: int,
    categorical: bool = True,
    numeric: bool = False,
    skip: frozenset[int] = frozenset(),
) -> tuple[list[ColumnTrees], dict]:
    """Fit one classifier per categorical column with 2..MAX_LEVELS levels (``categorical``)
    and one absolute-error regressor per numeric column (``numeric``), within ``seconds`` in
    all, except for the columns in ``skip`` (positions among all columns, numeric first);
    -> the fitted columns and a summary for the training metrics."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    started = time.perf_counter()
    deadline = started + seconds
    x = features(num, cat, mask)
    n_numeric = num.shape[1]
    sizes = [*([0] * n_numeric), *category_sizes]
    targets = []
    if categorical:
        targets += [(n_numeric + j, j, size) for j, size in enumerate(category_sizes)]
    if numeric:
        targets += [(j, j, 0) for j in range(n_numeric)]
    targets = [target for target in targets if target[0] not in skip]
    fitted, rounds, numeric_rounds = [], {}, {}
    for position, (column, j, size) in enumerate(targets):
        is_numeric = column < n_numeric
        now = time.perf_counter()
        if size > MAX_LEVELS or now > deadline:
            continue
        # An even share of the time left, so the last columns (the numeric ones) get trees
        # too; what a column does not use goes to those after it.
        column_deadline = now + (deadline - now) / (len(targets) - position)
        y = num[:, j] if is_numeric else cat[:, j]
        train = fit_rows[mask[fit_rows, column] > 0]
        if len(train) < 2 * MIN_LEAF or len(np.unique(y[train])) < 2:
            continue
        valid = val_rows[mask[val_rows, column] > 0]
        others = _splittable(x[train], column)
        if not len(others):
            continue
        options = dict(
            learning_rate=LEARNING_RATE,
            max_iter=0,
            min_samples_leaf=MIN_LEAF,
            max_leaf_nodes=MAX_LEAF_NODES,
            l2_regularization=1.0,  # without it, levels seen a few times run away
            early_stopping=False,
            warm_start=True,
            random_state=seed,
            categorical_features=[0 < sizes[f] <= MAX_CATEGORICAL_FEATURE_LEVELS for f in others],
        )
        if is_numeric:
            model = HistGradientBoostingRegressor(loss="absolute_error", **options)
        else:
            model = HistGradientBoostingClassifier(**options)
        best = _boost(model, x[:, others], y, train, valid, column_deadline)
        if not best:
            continue
        del model._predictors[best:]
        (numeric_rounds if is_numeric else rounds)[str(j)] = best
        column_trees = ColumnTrees(j, others, model, numeric=is_numeric)
        if _splits(column_trees):
            fitted.append(column_trees)
    summary = {"seconds": round(time.perf_counter() - started, 2), "rounds": rounds}
    if numeric:
        summary["numeric_rounds"] = numeric_rounds
    return fitted, summary


def _splittable(x: np.ndarray, column: int) -> np.ndarray:
    """The other columns with at least two distinct observed values in these rows: the rest
    cannot be split on (and scikit-learn cannot bin a column with no value at all)."""
    low, high = np.nanmin(x, axis=0, initial=np.inf), np.nanmax(x, axis=0, initial=-np.inf)
    usable = low < high
    usable[column] = False
    return np.flatnonzero(usable)


def _boost(model, x, y, train, valid, deadline) -> int:
    """Add rounds in chunks until the validation loss (log-loss for a classifier, absolute
    error for a regressor) stops improving, the rounds run out or the time does; -> the best
    number of rounds (by validation, else all)."""
    losses = []
    while model.max_iter < MAX_ROUNDS and time.perf_counter() < deadline:
        model.max_iter += ROUNDS_PER_CHUNK
        model.fit(x[train], y[train])
        if not len(valid):
            continue
        losses.append(_loss(model, _decision(model, x[valid]), y[valid]))
        # Stale: the last chunks did not improve on the best before them. (Comparing them
        # with the best of all chunks, themselves included, stopped every column at 30.)
        recent, earlier = losses[-STALE_CHUNKS:], losses[:-STALE_CHUNKS]
        if earlier and min(recent) >= min(earlier):
            break
    if model.max_iter == 0:  # out of time before the first round
        return 0
    if not len(valid) or model.n_iter_ == 0:
        return model.n_iter_
    staged = (
        model.staged_decision_function(x[valid])
        if hasattr(model, "classes_")
        else model.staged_predict(x[valid])
    )
    return int(np.argmin([_loss(model, d, y[valid]) for d in staged])) + 1


def _decision(model, x: np.ndarray) -> np.ndarray:
    return model.decision_function(x) if hasattr(model, "classes_") else model.predict(x)


def _loss(model, decision: np.ndarray, y: np.ndarray) -> float:
    if hasattr(model, "classes_"):
        return _log_loss(decision, model, y)
    return float(np.abs(decision - y).mean())


def _log_loss(decision: np.ndarray, classifier, y: np.ndarray) -> float:
    """Mean negative log-likelihood of ``y``; a level the classifier never saw scores ABSENT."""
    classes = classifier.classes_
    log_probs = _log_softmax(_class_logits(decision, len(classes)))
    index = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
    picked = np.where(classes[index] == y, log_probs[np.arange(len(y)), index], ABSENT)
    return float(-picked.mean())


def _class_logits(decision: np.ndarray, n_classes: int) -> np.ndarray:
    """Decision values -> one logit per class (binary models give the second class's only)."""
    if n_classes == 2:
        decision = decision.reshape(-1)
        return np.stack([np.zeros_like(decision), decision], axis=1)
    return decision.reshape(len(decision), n_classes)


def _start_logits(t: ColumnTrees, size: int) -> np.ndarray:
    """One column's log-odds per level before any tree: the classifier's starting point,
    ABSENT for levels it never saw."""
    classes = t.classifier.classes_.astype(int)
    start = t.classifier._baseline_prediction.reshape(1, -1)
    logits = np.full(size, ABSENT, dtype=np.float32)
    logits[classes] = _class_logits(start, len(classes))[0]
    return logits


def margins(trees: list[ColumnTrees], x: np.ndarray, category_sizes: list[int]) -> np.ndarray:
    """What ``trees_graph`` computes as ``tree_margins``, by scikit-learn: per level of every
    categorical column, the trees' log-odds on the rows where that column is unobserved (NaN in
    ``x``), their starting log-odds elsewhere (never used there: imputation keeps observed
    cells), 0 for columns without trees. (A gated column's graph leaves its starting log-odds
    on the rows where ``tree_sure`` holds too; the point graph does not add them there.)"""
    offsets = np.concatenate([[0], np.cumsum(category_sizes)]).astype(int)
    out = np.zeros((len(x), offsets[-1]), dtype=np.float32)
    n_numeric = x.shape[1] - len(category_sizes)
    for t in (t for t in trees if not t.numeric):
        column = n_numeric + t.column
        block = np.tile(_start_logits(t, category_sizes[t.column]), (len(x), 1))
        rows = np.isnan(x[:, column])
        if rows.any():
            block[rows] = _tree_logits(t, x[np.ix_(rows, t.features)], category_sizes[t.column])
        out[:, offsets[t.column] : offsets[t.column + 1]] = block
    return out


def _tree_logits(t: ColumnTrees, x: np.ndarray, size: int) -> np.ndarray:
    """One category column's log-odds per level from its trees as kept, on rows of its
    features ``x``: the levels whose trees were cut keep their start."""
    start = _start_logits(t, size)
    logits = np.tile(start, (len(x), 1))
    classes = t.classifier.classes_.astype(int)
    logits[:, classes] = _class_logits(t.classifier.decision_function(x), len(classes))
    dropped = sorted(t.dropped)
    logits[:, dropped] = start[dropped]
    return logits


def medians(trees: list[ColumnTrees], x: np.ndarray, n_numeric: int) -> np.ndarray:
    """What ``trees_graph`` computes as ``tree_medians``, by scikit-learn: each numeric column's
    trees' median (encoded scale) on the rows where it is unobserved, their starting value
    elsewhere, 0 for columns without trees."""
    out = np.zeros((len(x), n_numeric), dtype=np.float32)
    for t in (t for t in trees if t.numeric):
        out[:, t.column] = _start_median(t)
        rows = np.isnan(x[:, t.column])
        if rows.any():
            out[rows, t.column] = t.classifier.predict(x[np.ix_(rows, t.features)])
    return out


def blend_weights(trees: list[ColumnTrees], x: np.ndarray, net: np.ndarray, truth, hidden):
    """Each numeric column's share of the trees in its imputed median, chosen on validation
    cells: ``x`` the features with the ``hidden`` cells removed, ``net`` the point predictor's
    medians for them, ``truth`` the encoded values. The weight with the lowest absolute error
    wins (ties go to the predictor); -> {column: weight}, also stored on the trees."""
    chosen = {}
    candidates = np.linspace(0.0, 1.0, BLEND_STEPS)
    tree = medians(trees, x, net.shape[1])
    for t in (t for t in trees if t.numeric):
        rows = hidden[:, t.column]
        if not rows.any():
            continue
        ours, theirs, true = net[rows, t.column], tree[rows, t.column], truth[rows, t.column]
        errors = [np.abs(w * theirs + (1 - w) * ours - true).mean() for w in candidates]
        t.weight = float(candidates[int(np.argmin(errors))])
        chosen[str(t.column)] = round(t.weight, 2)
    return chosen


def category_rounds(
    trees: list[ColumnTrees], x: np.ndarray, net_logits: list, truth: np.ndarray, hidden
) -> dict:
    """Cut each category column's trees to the fewest tree walks (rounds, and in each round
    the levels whose trees are kept; none at all being a choice) that are, with confidence,
    as accurate in the product with the point predictor as all the trees fitted, on
    validation cells: ``x`` the features with the ``hidden`` cells removed, ``net_logits``
    the predictor's logits per category column, ``truth`` the codes.

    Why: the rounds were chosen by the trees' own log-loss, but the product with the
    predictor often needs fewer, and every round is a tree per level that each imputed cell
    walks. The rarest levels' trees are the first to go: a level whose trees are cut keeps
    its starting log-odds, and the predictor's logits still rank it. A cut must keep the
    accuracy lost plus twice its standard error (from the cells on which the two disagree)
    within ROUNDS_TOLERANCE, on at least ROUNDS_MIN_CELLS cells.
    Adult (48,842 rows, 20% of cells NULL): 1,929 trees -> 1,078 (numeric ones included), the
    accuracy on its NULL cells 0.7761 -> 0.7757 by rounds alone; a tolerance of 0.005 left
    568 trees but lost 0.19 points there. -> {column: rounds kept}; the trees are cut in
    place (``ColumnTrees.dropped`` names the levels cut from the rounds kept)."""
    chosen = {}
    for t in (t for t in trees if not t.numeric):
        rows = hidden[:, t.column]
        if rows.sum() < ROUNDS_MIN_CELLS:  # too few to tell rounds apart: all are kept
            continue
        net = _log_softmax(np.asarray(net_logits[t.column])[rows])
        x_rows, y = x[np.ix_(rows, t.features)], truth[rows, t.column]
        rounds, dropped = _cheapest_cut(t, x_rows, net, y)
        del t.classifier._predictors[rounds:]
        t.dropped = dropped
        chosen[str(t.column)] = rounds
        if _splits(t):
            t.confident = _confidence_gate(t, x_rows, net, y)
    trees[:] = [t for t in trees if t.numeric or _splits(t)]
    return chosen


def _cheapest_cut(t: ColumnTrees, x: np.ndarray, net: np.ndarray, y: np.ndarray):
    """(rounds, dropped): the fewest trees walked per cell, keeping ``rounds`` rounds without
    the trees of the ``dropped`` levels (the rarest), whose product with the predictor's
    log-probabilities ``net`` is as accurate on the cells ``y`` as all the trees'
    (``_safe_cut``)."""
    start = _start_logits(t, net.shape[1])
    classes = t.classifier.classes_.astype(int)

    def staged_logits():
        for decision in t.classifier.staged_decision_function(x):
            logits = np.tile(start, (len(y), 1))
            logits[:, classes] = _class_logits(decision, len(classes))
            yield logits

    def right(logits: np.ndarray) -> np.ndarray:
        return (net + _log_softmax(logits)).argmax(1) == y

    staged = [net.argmax(1) == y, *(right(logits) for logits in staged_logits())]
    rounds = next(r for r, ok in enumerate(staged) if _safe_cut(ok, staged[-1]))
    per_round = 1 if len(classes) == 2 else len(classes)  # a binary column: one tree a round
    best, cut = rounds * per_round, 0
    if per_round == 1:
        return rounds, frozenset()
    rarest = classes[::-1]  # codes run from the most frequent level in training
    for r, logits in enumerate(staged_logits(), start=1):
        if r >= best:  # even one level's trees in r rounds would walk no fewer
            break
        for n in range(1, per_round):
            logits[:, rarest[n - 1]] = start[rarest[n - 1]]
            if r * (per_round - n) >= best:
                continue
            if not _safe_cut(right(logits), staged[-1]):
                break
            best, rounds, cut = r * (per_round - n), r, n
    return rounds, frozenset(int(c) for c in rarest[:cut])


def _confidence_gate(t: ColumnTrees, x: np.ndarray, net: np.ndarray, y: np.ndarray):
    """The lowest of GATE_LEVELS at or above which the predictor's probability for its
    choice (``net``: its log-probabilities) lets that choice stand without the column's
    trees, as accurate on the cells ``y`` as with the trees kept (``_safe_cut``); None where
    none skips GATE_MIN_SHARE of the cells.

    Why: the trees seldom change a confident predictor's choice (adult, 30,000 rows, a fifth
    of the cells NULL: the predictor gave its choice 0.9 or more in 13-86% of a column's
    NULL cells, occupation's aside, and there the trees changed none of ~20,000), yet every
    NULL cell walked every tree. The graph walks a column's trees only on the rows where it
    is NULL and the predictor is not sure (``_column_block``)."""
    alone = net.argmax(1) == y
    kept = (net + _log_softmax(_tree_logits(t, x, net.shape[1]))).argmax(1) == y
    top = net.max(1)
    chosen = None
    for level in GATE_LEVELS:
        sure = top >= np.log(level)
        if not _safe_cut(np.where(sure, alone, kept), kept):
            break
        if sure.mean() >= GATE_MIN_SHARE:
            chosen = level
    return chosen


def _safe_cut(cut: np.ndarray, full: np.ndarray) -> bool:
    """Whether the accuracy ``cut`` loses against ``full`` (cells right or wrong), plus twice
    its standard error, is within ROUNDS_TOLERANCE."""
    lost = int((full & ~cut).sum()) - int((cut & ~full).sum())
    error = np.sqrt(float((full != cut).sum()))
    return (lost + 2 * error) / len(full) <= ROUNDS_TOLERANCE


def _splits(t: ColumnTrees) -> bool:
    """Whether any tree kept splits (a level's trees cut by ``category_rounds`` are not)."""
    return any(not _leaf(p) for target, p in _kept_trees(t))


def _kept_trees(t: ColumnTrees):
    """(target, tree) for every tree of ``t`` kept, round by round: a regressor's target 0, a
    classifier's the level it scores (a binary one scores its second class only)."""
    if t.numeric:
        return [(0, p) for (p,) in t.classifier._predictors]
    classes = t.classifier.classes_.astype(int)
    targets = classes[1:] if len(classes) == 2 else classes
    return [
        (int(target), p)
        for rounds in t.classifier._predictors
        for target, p in zip(targets, rounds, strict=True)
        if int(target) not in t.dropped
    ]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def trees_graph(trees: list[ColumnTrees], n_numeric: int, category_sizes: list[int]):
    """(num, cat, mask) -> tree_margins, tree_medians, as ``margins`` and ``medians`` compute
    them, in one ONNX graph.

    Each column's trees run only on the rows where that column is unobserved (gathered, then
    scattered back over the starting values): with a fifth of the cells NULL they evaluate
    a fifth of the rows. A column with a confidence gate (``ColumnTrees.confident``) skips
    the rows where the ``tree_sure`` input (the point predictor's, ``export.PointGraph``)
    is true: their margins are the starting values, which the point graph does not use.

    Every split is a ``BRANCH_LEQ`` on a finite threshold, with no missing-value tracking:
    onnxruntime walks such trees much faster than trees that mix set-membership splits and
    NaN checks (adult's trees, one thread, 1,024-row blocks with a fifth of the cells NULL:
    24.1 ms before, 16.0 ms with the lookups below, the same outputs). So the trees read
    each column twice, an unobserved cell as -inf in one copy (for splits that send it
    left) and +inf in the other, and each category set a split asks about is a feature of
    its own, 0 for the codes in the set and 1 for the others, looked up per row in its
    column's table by code (an unobserved cell reading as the code one past the column's
    levels)."""
    n_columns = n_numeric + len(category_sizes)
    nodes = [
        helper.make_node("Cast", ["cat"], ["trees_cat"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["num", "trees_cat"], ["trees_values"], axis=1),
        helper.make_node("Greater", ["mask", "trees_zero"], ["trees_observed"]),
        helper.make_node("Where", ["trees_observed", "trees_values", "trees_low"], ["trees_lo"]),
        helper.make_node("Where", ["trees_observed", "trees_values", "trees_high"], ["trees_hi"]),
        helper.make_node("Concat", ["trees_lo", "trees_hi"], ["trees_x"], axis=1),
        helper.make_node("Shape", ["mask"], ["trees_batch"], end=1),
    ]
    constants = [
        numpy_helper.from_array(np.float32(0.0), "trees_zero"),
        numpy_helper.from_array(np.float32(-np.inf), "trees_low"),
        numpy_helper.from_array(np.float32(np.inf), "trees_high"),
    ]
    if category_sizes:  # the category codes, an unobserved cell as its column's size
        constants += [
            numpy_helper.from_array(np.asarray([n_numeric], np.int64), "trees_first_cat"),
            numpy_helper.from_array(np.asarray([n_columns], np.int64), "trees_end"),
            numpy_helper.from_array(np.asarray([1], np.int64), "trees_axis"),
            numpy_helper.from_array(np.asarray(category_sizes, np.int64), "trees_absent"),
        ]
        nodes += [
            helper.make_node(
                "Slice",
                ["trees_observed", "trees_first_cat", "trees_end", "trees_axis"],
                ["trees_cat_observed"],
            ),
            helper.make_node(
                "Where", ["trees_cat_observed", "cat", "trees_absent"], ["trees_codes"]
            ),
        ]
    categorical = {t.column: t for t in trees if not t.numeric}
    numeric = {t.column: t for t in trees if t.numeric}
    blocks = {MARGINS: [], MEDIANS: []}
    for j, size in enumerate(category_sizes):
        t = categorical.get(j)
        ensemble = _column_ensemble(t, n_numeric, category_sizes) if t else None
        base = ensemble.base if t else np.zeros(size, np.float32)
        gate = j if t and t.confident else None
        block = _column_block(f"trees_{j}", n_numeric + j, ensemble, base, nodes, constants, gate)
        blocks[MARGINS].append(block)
    for j in range(n_numeric):
        t = numeric.get(j)
        ensemble = _column_ensemble(t, n_numeric, category_sizes) if t else None
        base = ensemble.base if t else np.zeros(1, np.float32)
        blocks[MEDIANS].append(_column_block(f"trees_num_{j}", j, ensemble, base, nodes, constants))
    for output, parts in blocks.items():
        if parts:
            nodes.append(helper.make_node("Concat", parts, [output], axis=1))
        else:  # no column of that kind: an empty [batch, 0] block
            constants.append(numpy_helper.from_array(np.asarray([0], np.int64), f"{output}_w"))
            nodes += [
                helper.make_node("Concat", ["trees_batch", f"{output}_w"], [f"{output}_s"], axis=0),
                helper.make_node("ConstantOfShape", [f"{output}_s"], [output]),
            ]
    widths = {MARGINS: sum(category_sizes), MEDIANS: n_numeric}
    inputs = [
        helper.make_tensor_value_info("num", TensorProto.FLOAT, ["batch", n_numeric]),
        helper.make_tensor_value_info("cat", TensorProto.INT64, ["batch", len(category_sizes)]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", n_columns]),
    ]
    if gated(trees):
        shape = ["batch", len(category_sizes)]
        inputs.append(helper.make_tensor_value_info(SURE, TensorProto.BOOL, shape))
    graph = helper.make_graph(
        nodes,
        "column_trees",
        inputs,
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
            for name, width in widths.items()
        ],
        constants,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    )


def gated(trees: list[ColumnTrees]) -> bool:
    """Whether any column's trees are skipped where the predictor is sure (``SURE``)."""
    return any(t.confident for t in trees if not t.numeric)


def _column_block(name, column, ensemble, base, nodes, constants, gate=None) -> str:
    """One column's block of the trees' output: its starting values on every row, and, with
    trees, their output scattered onto the rows where the column is unobserved (and, with a
    ``gate``, its column of ``SURE`` false)."""
    constants += [
        numpy_helper.from_array(np.asarray(base, np.float32), f"{name}_base"),
        numpy_helper.from_array(np.asarray([len(base)], np.int64), f"{name}_width"),
    ]
    nodes += [
        helper.make_node("Concat", ["trees_batch", f"{name}_width"], [f"{name}_shape"], axis=0),
        helper.make_node("Expand", [f"{name}_base", f"{name}_shape"], [f"{name}_start"]),
    ]
    if ensemble is None:
        return f"{name}_start"
    constants.append(numpy_helper.from_array(np.int64(column), f"{name}_column"))
    nodes += [
        helper.make_node("Gather", ["trees_observed", f"{name}_column"], [f"{name}_seen"], axis=1),
        helper.make_node("Not", [f"{name}_seen"], [f"{name}_unseen"]),
    ]
    walked = f"{name}_unseen"
    if gate is not None:
        constants.append(numpy_helper.from_array(np.int64(gate), f"{name}_gate"))
        nodes += [
            helper.make_node("Gather", [SURE, f"{name}_gate"], [f"{name}_sure"], axis=1),
            helper.make_node("Not", [f"{name}_sure"], [f"{name}_unsure"]),
            helper.make_node("And", [walked, f"{name}_unsure"], [f"{name}_walked"]),
        ]
        walked = f"{name}_walked"
    nodes += [
        helper.make_node("NonZero", [walked], [f"{name}_nz"]),
        helper.make_node("Transpose", [f"{name}_nz"], [f"{name}_rows"], perm=[1, 0]),
        helper.make_node("GatherND", ["trees_x", f"{name}_rows"], [f"{name}_values"]),
    ]
    features = f"{name}_values"
    if ensemble.sets:  # each category column's sets, looked up by its codes on those rows
        nodes.append(helper.make_node("GatherND", ["trees_codes", f"{name}_rows"], [f"{name}_c"]))
        parts = [features]
        for j, table in _set_tables(ensemble.sets):
            part = f"{name}_sets_{j}"
            constants += [
                numpy_helper.from_array(np.int64(j), f"{part}_column"),
                numpy_helper.from_array(table, f"{part}_table"),
            ]
            nodes += [
                helper.make_node(
                    "Gather", [f"{name}_c", f"{part}_column"], [f"{part}_codes"], axis=1
                ),
                helper.make_node("Gather", [f"{part}_table", f"{part}_codes"], [part], axis=0),
            ]
            parts.append(part)
        nodes.append(helper.make_node("Concat", parts, [f"{name}_x"], axis=1))
        features = f"{name}_x"
    nodes += [
        helper.make_node(
            "TreeEnsemble", [features], [f"{name}_raw"], domain=ML_DOMAIN, **ensemble.attributes
        ),
        helper.make_node("Add", [f"{name}_raw", f"{name}_base"], [f"{name}_scores"]),
        helper.make_node(
            "ScatterND", [f"{name}_start", f"{name}_rows", f"{name}_scores"], [f"{name}_out"]
        ),
    ]
    return f"{name}_out"


def _set_tables(sets: list[tuple[int, int, frozenset]]):
    """Per category column, in order, the table of its sets (given in that order as the
    category column, its number of codes, the codes in the set): a row per code and one for
    an unobserved cell, a column per set, 0 where the code is in the set and 1 elsewhere."""
    tables = []
    for j in sorted({j for j, _, _ in sets}):
        mine = [(size, codes) for column, size, codes in sets if column == j]
        table = np.ones((mine[0][0] + 1, len(mine)), np.float32)
        for k, (_, codes) in enumerate(mine):
            table[sorted(codes), k] = 0.0
        tables.append((j, table))
    return tables


def attach(graph_bytes: bytes, trees: list[ColumnTrees], n_numeric, category_sizes) -> bytes:
    """Replace the ``tree_margins`` / ``tree_medians`` inputs of an exported graph by the trees
    that compute them; a graph whose trees are gated also has the ``tree_sure`` output,
    which the trees read and which leaves the outputs."""
    model = onnx.load_from_string(graph_bytes)
    source = trees_graph(trees, n_numeric, category_sizes).graph
    graph = model.graph
    kept = [i for i in graph.input if i.name not in (MARGINS, MEDIANS)]
    del graph.input[:]
    graph.input.extend(kept)
    outputs = [o for o in graph.output if o.name != SURE]
    del graph.output[:]
    graph.output.extend(outputs)
    nodes = _in_order([*source.node, *graph.node], [i.name for i in graph.input])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(source.initializer)
    model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    return model.SerializeToString()


def _in_order(nodes: list, inputs: list[str]) -> list:
    """``nodes`` in an order where each comes after the nodes whose outputs it reads (ONNX
    asks for it), otherwise as given: the trees first, except those that wait for the
    predictor's ``tree_sure``."""
    made = {output: k for k, node in enumerate(nodes) for output in node.output}
    ready, order = set(inputs) | {""}, []
    pending = list(range(len(nodes)))
    while pending:
        left = []
        for k in pending:
            reads = [name for name in nodes[k].input if name in made]
            if all(name in ready for name in reads):
                order.append(nodes[k])
                ready.update(nodes[k].output)
            else:
                left.append(k)
        if len(left) == len(pending):
            raise ValueError("the trees and the point graph read each other's outputs")
        pending = left
    return order


def _start_median(t: ColumnTrees) -> float:
    """A regressor's value before any tree, plus its rounds that never split."""
    start = float(np.asarray(t.classifier._baseline_prediction).reshape(-1)[0])
    return start + sum(p.nodes[0]["value"] for (p,) in t.classifier._predictors if _leaf(p))


def _leaf(predictor) -> bool:
    return bool(predictor.nodes[0]["is_leaf"])


@dataclass
class _Ensemble:
    """One column's trees as a TreeEnsemble: its attributes, its constant output and the
    category sets its splits read (features after the -inf and +inf copies of the columns)."""

    attributes: dict
    base: np.ndarray
    sets: list  # (category column, its number of codes, frozenset of codes)


def _column_ensemble(t: ColumnTrees, n_numeric, category_sizes) -> _Ensemble:
    """TreeEnsemble attributes for one column's trees over the other columns' features, and
    its constant output: a classifier's log-odds per level (the model's start, ABSENT for
    levels it never saw, plus trees without a split), a regressor's starting median."""
    model = t.classifier
    layout = _Layout(model, t.features, n_numeric, category_sizes)
    out = _Nodes()
    if t.numeric:
        for target, predictor in _kept_trees(t):
            if not _leaf(predictor):
                out.add_tree(predictor, target, layout)
        attributes = out.attributes(1)  # puts out.sets in graph order
        return _Ensemble(attributes, np.asarray([_start_median(t)], np.float32), out.sets)
    base = _start_logits(t, category_sizes[t.column])
    for target, predictor in _kept_trees(t):
        if _leaf(predictor):
            base[target] += predictor.nodes[0]["value"]
        else:
            out.add_tree(predictor, target, layout)
    attributes = out.attributes(len(base))  # puts out.sets in graph order
    return _Ensemble(attributes, base, out.sets)


class _Layout:
    """Where scikit-learn's internal features come from. With categorical features, its
    HistGradientBoosting puts them first and recodes their levels 0..n-1 in sorted order,
    levels not seen in fit becoming missing; its trees split on those internal codes."""

    def __init__(self, classifier, others: np.ndarray, n_numeric: int, category_sizes: list):
        self.sizes = [0] * n_numeric + list(category_sizes)
        self.n_numeric, self.n_columns = n_numeric, len(self.sizes)
        preprocessor = classifier._preprocessor
        if preprocessor is None:  # no categorical feature: nothing is moved or recoded
            self.feature = [int(f) for f in others]
            self.internal = [None] * len(others)
            return
        categorical = np.asarray(classifier.is_categorical_, dtype=bool)
        order = np.concatenate([np.flatnonzero(categorical), np.flatnonzero(~categorical)])
        self.feature = [int(others[i]) for i in order]
        levels = preprocessor.named_transformers_["encoder"].categories_
        self.internal = [
            {int(v): k for k, v in enumerate(values) if not np.isnan(v)} for values in levels
        ] + [None] * int((~categorical).sum())

    def left_codes(self, feature: int, bitset: np.ndarray, node) -> list[int]:
        """Our codes that a categorical split sends left: its levels, and, where missing
        values go left, the levels it never saw (which it treats as missing)."""
        internal = self.internal[feature]
        left = []
        for code in range(self.sizes[self.feature[feature]]):
            value = internal.get(code)
            if (value is not None and _has(bitset, value)) or (
                value is None and node["missing_go_to_left"]
            ):
                left.append(code)
        return left


class _Nodes:
    """The flat node and leaf arrays of a TreeEnsemble, filled tree by tree, every split a
    ``BRANCH_LEQ`` (see ``trees_graph``), and the category sets those splits read."""

    def __init__(self):
        self.roots, self.features, self.splits = [], [], []
        self.true_ids, self.true_leaf, self.false_ids, self.false_leaf = [], [], [], []
        self.leaf_targets, self.leaf_weights = [], []
        self.sets, self._set_index, self._n_columns = [], {}, 0

    def _set_feature(self, layout: _Layout, column: int, codes: frozenset) -> int:
        """A stand-in (-1 - its number) for the feature that is 0 where ``column``'s code is
        in ``codes`` and 1 elsewhere; ``attributes`` puts the sets in their graph order."""
        key = (column - layout.n_numeric, codes)
        if key not in self._set_index:
            self._set_index[key] = len(self.sets)
            self.sets.append((key[0], layout.sizes[column], codes))
        self._n_columns = layout.n_columns
        return -1 - self._set_index[key]

    def add_tree(self, predictor, target: int, layout: _Layout):
        nodes = predictor.nodes
        interior = ~nodes["is_leaf"].astype(bool)
        self.roots.append(len(self.features))
        ids = len(self.features) + np.cumsum(interior) - 1  # interior nodes' numbers
        for i in np.flatnonzero(~interior):
            ids[i] = len(self.leaf_weights)  # leaves are numbered apart
            self.leaf_targets.append(int(target))
            self.leaf_weights.append(float(nodes[i]["value"]))
        for node in nodes[interior]:
            feature = int(node["feature_idx"])
            column = layout.feature[feature]
            missing_left = bool(node["missing_go_to_left"])
            if node["is_categorical"]:  # in the set of codes that go left: 0 <= 0.5
                left = layout.left_codes(
                    feature, predictor.raw_left_cat_bitsets[node["bitset_idx"]], node
                )
                if missing_left:  # an unobserved cell reads as the column's size
                    left.append(layout.sizes[column])
                self.features.append(self._set_feature(layout, column, frozenset(left)))
                self.splits.append(0.5)
            else:  # an unobserved cell reads as -inf where it goes left, +inf where right
                self.features.append(column if missing_left else layout.n_columns + column)
                self.splits.append(min(_float32_at_most(node["num_threshold"]), FLOAT32_MAX))
            left, right = int(node["left"]), int(node["right"])
            self.true_ids.append(int(ids[left]))
            self.true_leaf.append(int(nodes[left]["is_leaf"]))
            self.false_ids.append(int(ids[right]))
            self.false_leaf.append(int(nodes[right]["is_leaf"]))

    def attributes(self, n_targets: int) -> dict:
        """The TreeEnsemble attributes; the sets (``self.sets``) are put in the graph's order
        of their features: grouped by category column (``_set_tables``), after the -inf and
        +inf copies of the columns."""
        order = sorted(range(len(self.sets)), key=lambda k: self.sets[k][0])
        place = {k: 2 * self._n_columns + i for i, k in enumerate(order)}
        features = [f if f >= 0 else place[-1 - f] for f in self.features]
        self.sets = [self.sets[k] for k in order]

        def floats(values):
            return numpy_helper.from_array(np.asarray(values, dtype=np.float32))

        attributes = {
            "n_targets": n_targets,
            "aggregate_function": 1,  # SUM
            "post_transform": 0,  # NONE
            "tree_roots": self.roots,
            "nodes_featureids": features,
            "nodes_modes": numpy_helper.from_array(
                np.full(len(features), BRANCH_LEQ, dtype=np.uint8)
            ),
            "nodes_splits": floats(self.splits),
            "nodes_truenodeids": self.true_ids,
            "nodes_trueleafs": self.true_leaf,
            "nodes_falsenodeids": self.false_ids,
            "nodes_falseleafs": self.false_leaf,
            "leaf_targetids": self.leaf_targets,
            "leaf_weights": floats(self.leaf_weights),
        }
        return attributes


def _has(bitset: np.ndarray, code: int) -> bool:
    return bool((int(bitset[code // 32]) >> (code % 32)) & 1)


def _float32_at_most(threshold: float) -> float:
    """The largest float32 not above ``threshold``: for float32 inputs, x <= it exactly when
    x <= threshold, so the float32 graph routes every value as float64 scikit-learn did."""
    rounded = np.float32(threshold)
    if rounded > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)
