"""Run one peer imputer or synthesizer on Parquet files, in whatever virtual environment has it.

The quality benchmark calls this with the interpreter of the peer's own environment (their
pins conflict with ours and with each other); tables cross as Parquet, timings as JSON. Only
numpy, pandas and pyarrow are assumed; each method imports its library when it runs.

    python run_peer.py impute METHOD --train T --test T --categorical a,b --out-train F --out-test F
    python run_peer.py synthesize METHOD --train T --rows N --categorical a,b --out F
    python run_peer.py multiple miceforest --train T --imputations M --categorical a,b --out F
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd


# -- imputers: fit on the masked training rows, fill them and the masked held-out rows ------
def knn(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    from sklearn.impute import KNNImputer

    return _on_matrix(KNNImputer(n_neighbors=5), train, test, categorical, scale=True)


def mice(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    imputer = IterativeImputer(max_iter=10, random_state=seed)
    return _on_matrix(imputer, train, test, categorical, scale=False)


def missforest(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    """The `missforest` package (LightGBM forests); it wants categories as integer codes."""
    from missforest import MissForest

    codes, levels = _ordinal(pd.concat([train, test]), categorical)
    imputer = MissForest(categorical=categorical or None, verbose=0)
    imputer.fit(codes.iloc[: len(train)])
    filled = [
        imputer.transform(codes.iloc[: len(train)]),
        imputer.transform(codes.iloc[len(train) :]),
    ]
    return [_decode(frame, levels) for frame in filled]


def missforest_rf(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    """MissForest as Stekhoven & Buehlmann wrote it, on scikit-learn's random forests: start
    from mean/mode, then column by column (fewest missing first) fit a forest on the rows where
    the column is observed and predict where it is not; repeat until the change grows. Forests
    learn from the training rows only; held-out rows are filled by the same forests.

    (The `missforest` package fits each forest on all rows, its own guesses included, so on
    the rows it was fitted on it mostly returns those guesses.)"""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    codes, levels = _ordinal(pd.concat([train, test]), categorical)
    x = codes.to_numpy(float)
    n = len(train)
    missing = np.isnan(x)
    is_cat = np.array([c in categorical for c in codes.columns])
    start = np.nanmean(x[:n], axis=0)
    for j in np.flatnonzero(is_cat):
        observed = x[:n, j][~missing[:n, j]].astype(int)
        start[j] = np.bincount(observed).argmax() if observed.size else 0
    filled = np.where(missing, start, x)
    order = np.argsort(missing[:n].sum(0), kind="stable")
    change = (np.inf, np.inf)
    for _ in range(10):
        before = filled.copy()
        for j in order:
            if not missing[:, j].any():
                continue
            learn = ~missing[:n, j]
            others = np.delete(filled, j, axis=1)
            forest = (RandomForestClassifier if is_cat[j] else RandomForestRegressor)(
                n_estimators=50, n_jobs=-1, random_state=seed
            )
            forest.fit(others[:n][learn], x[:n][learn, j])
            filled[missing[:, j], j] = forest.predict(others[missing[:, j]])
        num, cat = ~is_cat, is_cat
        new_change = (
            ((filled[:, num] - before[:, num]) ** 2).sum()
            / max((filled[:, num] ** 2).sum(), 1e-12),
            (filled[:, cat] != before[:, cat]).sum() / max(missing[:, cat].sum(), 1),
        )
        grew = [
            new > old
            for new, old, kinds in zip(new_change, change, (num, cat), strict=True)
            if kinds.any()
        ]
        if all(grew):
            filled = before  # the original stopping rule: keep the iterate before the change grew
            break
        change = new_change
    frame = _decode(pd.DataFrame(filled, columns=codes.columns), levels)[list(train.columns)]
    return [frame.iloc[:n], frame.iloc[n:]]


def hyperimpute(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    """HyperImpute has no separate transform (its transform fits anew), so it imputes the
    training and held-out rows together: transductive, which can only help it."""
    from hyperimpute.plugins.imputers import Imputers
    from hyperimpute.plugins.imputers._hyperimpute_internals import LARGE_DATA_CLF_SEEDS

    both = pd.concat([train, test], ignore_index=True)
    codes, levels = _ordinal(both, categorical)
    # a column is categorical below this many distinct values, NaN counting as one
    most_levels = max([len(v) for v in levels.values()] or [0])
    # Its XGBoost classifier fails under xgboost 2 and 3 ("num_class should be greater equal to
    # 1") on adult and default; the rest of its default model pool is kept.
    classifiers = [name for name in LARGE_DATA_CLF_SEEDS if name != "xgboost"]
    imputer = Imputers().get(
        "hyperimpute",
        random_state=seed,
        class_threshold=min(max(5, most_levels + 2), 64),
        classifier_seed=classifiers,
    )
    filled = imputer.fit_transform(codes.astype(float))
    filled.columns = codes.columns
    for name in categorical:
        filled[name] = filled[name].round().clip(0, len(levels[name]) - 1)
    filled = _decode(filled, levels)
    return [filled.iloc[: len(train)], filled.iloc[len(train) :]]


def _on_matrix(imputer, train, test, categorical, scale: bool):
    """Numbers as they are (z-scored for distance-based imputers), categories one-hot with the
    whole block NaN where the cell is missing; the largest imputed one-hot entry decodes."""
    numeric = [c for c in train.columns if c not in categorical]
    levels = {c: sorted(train[c].dropna().unique().tolist()) for c in categorical}
    mean = train[numeric].mean()
    std = train[numeric].std().replace(0, 1.0) if scale else pd.Series(1.0, index=numeric)

    def encode(frame):
        blocks = [((frame[numeric] - mean) / std).to_numpy(float)]
        for c in categorical:
            onehot = np.stack([(frame[c] == lv).to_numpy(float) for lv in levels[c]], axis=1)
            onehot[frame[c].isna().to_numpy()] = np.nan
            blocks.append(onehot)
        return np.hstack(blocks)

    imputer.fit(encode(train))
    out = []
    for frame in (train, test):
        matrix = imputer.transform(encode(frame))
        result = pd.DataFrame(
            matrix[:, : len(numeric)] * std.to_numpy() + mean.to_numpy(), columns=numeric
        )
        col = len(numeric)
        for c in categorical:
            width = len(levels[c])
            result[c] = np.asarray(levels[c], dtype=object)[matrix[:, col : col + width].argmax(1)]
            col += width
        out.append(result[list(train.columns)])
    return out


def _ordinal(frame: pd.DataFrame, categorical: list[str]):
    codes, levels = frame.copy().reset_index(drop=True), {}
    for name in categorical:
        levels[name] = sorted(frame[name].dropna().unique().tolist())
        index = {v: i for i, v in enumerate(levels[name])}
        codes[name] = frame[name].map(index).astype(float).to_numpy()
    return codes, levels


def _decode(frame: pd.DataFrame, levels: dict) -> pd.DataFrame:
    frame = frame.copy()
    for name, values in levels.items():
        frame[name] = np.asarray(values, dtype=object)[frame[name].round().astype(int).to_numpy()]
    return frame


# -- synthesizers: SDV 2.0 -----------------------------------------------------------------
def _sdv(kind: str, train: pd.DataFrame, rows: int, categorical: list[str], seed: int, epochs: int):
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    kinds = {n: {"sdtype": "categorical" if n in categorical else "numerical"} for n in train}
    metadata = Metadata.load_from_dict(
        {"METADATA_SPEC_VERSION": "V1", "tables": {"real": {"columns": kinds}}}
    )
    if kind == "gaussiancopula":
        synthesizer = GaussianCopulaSynthesizer(metadata)
    else:
        cls = CTGANSynthesizer if kind == "ctgan" else TVAESynthesizer
        synthesizer = cls(metadata, epochs=epochs, enable_gpu=False)
    _seed_everything(seed)
    start = time.perf_counter()
    synthesizer.fit({"real": train})  # SDV 2.0 takes a table name -> frame mapping
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    sample = synthesizer.sample(num_rows=rows)
    if isinstance(sample, dict):  # SDV 2.0 hands tables as {name: frame}, even for one table
        sample = sample["real"]
    return sample, {"fit_s": fitted, "sample_s": time.perf_counter() - start}


def _tabularargn_sample(kind, train, rows, categorical, seed, epochs):
    """TabularARGN with its defaults (model size, epochs, early stopping), on the CPU."""
    start = time.perf_counter()
    model = _tabularargn(train, categorical, seed)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    sample = model.sample(n_samples=rows)
    return sample, {"fit_s": fitted, "sample_s": time.perf_counter() - start}


def _seed_everything(seed: int) -> None:
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def miceforest_multiple(
    frame: pd.DataFrame, categorical: list[str], m: int, seed: int, iterations: int
):
    """miceforest's multiple imputation: ``m`` datasets, ``iterations`` MICE rounds, its
    defaults otherwise."""
    data, names = _miceforest_frame(frame, categorical)
    kernel = _miceforest_kernel(data, m, seed)
    kernel.mice(iterations)
    back = {v: k for k, v in names.items()}
    return [kernel.complete_data(dataset=i).rename(columns=back) for i in range(m)]


def _miceforest_frame(frame: pd.DataFrame, categorical: list[str], names=None, like=None):
    """Plain column names (miceforest's LightGBM refuses some characters) and categories as
    pandas categoricals; new data gets the training frame's (``like``) levels, as
    ``impute_new_data`` requires."""
    names = names or {name: f"c{i}" for i, name in enumerate(frame.columns)}
    data = frame.rename(columns=names).reset_index(drop=True)
    for name in categorical:
        column = names[name]
        if like is None:
            data[column] = data[column].astype("category")
        else:
            data[column] = pd.Categorical(data[column], categories=like[column].cat.categories)
    return data, names


def _miceforest_kernel(data: pd.DataFrame, m: int, seed: int):
    """A kernel whose log-odds cannot be infinite: miceforest turns a class probability of
    exactly 1.0 into inf, which crashes its mean matching, so probabilities are clipped."""
    import miceforest as mf
    import miceforest.imputation_kernel as mf_kernel

    if not getattr(mf_kernel.logodds, "clipped", False):
        original = mf_kernel.logodds  # imported by name into the kernel, which calls it

        def clipped(probability):
            return original(np.clip(probability, 1e-6, 1 - 1e-6))

        clipped.clipped = True
        mf_kernel.logodds = clipped
    return mf.ImputationKernel(data, num_datasets=m, random_state=seed)


def miceforest_single(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    """miceforest with its defaults: one dataset, 5 MICE rounds on the training rows; held-out
    rows are filled by the same models (``impute_new_data``)."""
    data, names = _miceforest_frame(train, categorical)
    kernel = _miceforest_kernel(data, 1, seed)
    kernel.mice(5)
    new, _ = _miceforest_frame(test, categorical, names, like=data)
    back = {v: k for k, v in names.items()}
    filled_test = kernel.impute_new_data(new, random_state=seed).complete_data(dataset=0)
    return [
        kernel.complete_data(dataset=0).rename(columns=back),
        filled_test.rename(columns=back),
    ]


def tabularargn_impute(train: pd.DataFrame, test: pd.DataFrame, categorical: list[str], seed: int):
    """MOSTLY AI's TabularARGN with its defaults, fitted on the masked training rows; each
    missing cell is one draw given the row's observed cells (``impute``, 1 draw)."""
    model = _tabularargn(train, categorical, seed)
    return [model.impute(train), model.impute(test)]


def _tabularargn(train: pd.DataFrame, categorical: list[str], seed: int):
    from mostlyai.engine import TabularARGN

    kinds = {c: "TABULAR_CATEGORICAL" for c in categorical}
    kinds.update({c: "TABULAR_NUMERIC_AUTO" for c in train.columns if c not in categorical})
    model = TabularARGN(tgt_encoding_types=kinds, device="cpu", random_state=seed)
    model.fit(train.reset_index(drop=True))
    return model


IMPUTERS = {
    "knn": knn,
    "mice": mice,
    "missforest_rf": missforest_rf,
    "missforest": missforest,
    "hyperimpute": hyperimpute,
    "miceforest": miceforest_single,
    "tabularargn": tabularargn_impute,
}
SYNTHESIZE = {
    "gaussiancopula": _sdv,
    "ctgan": _sdv,
    "tvae": _sdv,
    "tabularargn": _tabularargn_sample,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["impute", "synthesize", "multiple"])
    parser.add_argument("method", choices=sorted({*IMPUTERS, *SYNTHESIZE}))
    parser.add_argument("--imputations", type=int, default=20, help="datasets (multiple)")
    parser.add_argument("--iterations", type=int, default=5, help="MICE rounds (multiple)")
    parser.add_argument("--train", required=True)
    parser.add_argument("--test")
    parser.add_argument("--categorical", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--out", help="synthetic rows (synthesize)")
    parser.add_argument("--out-train")
    parser.add_argument("--out-test")
    parser.add_argument("--timing", required=True, help="JSON file for seconds")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    categorical = [c for c in args.categorical.split(",") if c]
    train = pd.read_parquet(args.train)
    for name in categorical:
        train[name] = train[name].astype(object)
    if args.task == "impute":
        test = pd.read_parquet(args.test)
        for name in categorical:
            test[name] = test[name].astype(object)
        start = time.perf_counter()
        filled_train, filled_test = IMPUTERS[args.method](train, test, categorical, args.seed)
        timing = {"s": time.perf_counter() - start}
        _write(filled_train, train, categorical, args.out_train)
        _write(filled_test, test, categorical, args.out_test)
    elif args.task == "multiple":
        start = time.perf_counter()
        copies = miceforest_multiple(
            train, categorical, args.imputations, args.seed, args.iterations
        )
        timing = {"s": time.perf_counter() - start}
        _write_long(copies, train, categorical, args.out)
    else:
        sample, timing = SYNTHESIZE[args.method](
            args.method, train, args.rows, categorical, args.seed, args.epochs
        )
        _write(sample, train, categorical, args.out)
    with open(args.timing, "w") as handle:
        json.dump(timing, handle)


def _write(frame: pd.DataFrame, like: pd.DataFrame, categorical: list[str], path: str) -> None:
    """Same column order and kinds as the input: numbers as float64, categories as strings."""
    frame = frame.reset_index(drop=True)[list(like.columns)]
    out = {}
    for name in like.columns:
        if name in categorical:
            out[name] = frame[name].map(lambda v: None if pd.isna(v) else str(v))
        else:
            out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
    pd.DataFrame(out).to_parquet(path, index=False)


def _write_long(copies: list[pd.DataFrame], like, categorical, path: str) -> None:
    """The completed copies stacked in order (as the long format of mice::complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for copy in copies:
        _write(copy, like, categorical, path)
        tables.append(pq.read_table(path))
    pq.write_table(pa.concat_tables(tables), path)


if __name__ == "__main__":
    main()
