"""Membership inference: what synthetic rows, and the stored graphs, tell an attacker about which
rows a model was trained on, scored the way the MIDST challenge scores it.

An attack gives every challenge row a score (higher: "this row was trained on"). Challenge rows
are half members (training rows) and half non-members from the same population; the score that
matters is the true-positive rate at a low false-positive rate (TPR at 10% and at 1% FPR), where
guessing gets exactly the FPR. A distance-to-closest-record share near 0.5 is no evidence of
privacy: an attack only has to single out a few rows to succeed.

The black-box attacks see the synthetic rows and rows of the same population that were not
trained on (the reference an attacker is assumed to hold):

- ``closest_record``: the nearer a synthetic row, the likelier a member (Chen et al., GAN-Leaks).
- ``density_ratio``: synthetic density over reference density at the row, by k-nearest-neighbour
  distances (DOMIAS, van Breugel et al. 2023): a model that overfits puts extra mass on members.

The white-box attack uses what a reader of the registry holds, the stored impute graph:

- ``reconstruction``: hide each column of the row in turn and let the model fill it; members
  are filled closer to their truth (the analogue, for our graphs, of the denoising-loss attack
  that won MIDST).

Distances are Gower-like: numbers by their rank in the reference (0..1), a NULL as its own
indicator, a category mismatch costing 1, so no column dominates by its scale.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .encoding import numeric_values
from .metrics import (
    closest_record_share,
    is_numeric,
    nearest_distances,
    nearest_record_distances,
    one_hots,
)

FALSE_POSITIVE_RATES = (0.1, 0.01)
NEIGHBOURS = 5  # k of the density-ratio attack's k-nearest-neighbour densities
TINY_DISTANCE = 1e-6  # added before logs: copies of a row are at distance 0
ATTACKS = ("closest_record", "density_ratio", "reconstruction")


def roc_curve(scores: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every threshold, tied scores taken together (the
    curve's corners only: what a threshold can actually separate)."""
    member = np.asarray(member, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ranked, hits = np.asarray(scores, dtype=float)[order], member[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    true_pos = np.cumsum(hits)[last_of_tie]
    false_pos = np.cumsum(~hits)[last_of_tie]
    positives, negatives = max(int(member.sum()), 1), max(int((~member).sum()), 1)
    return np.r_[0.0, false_pos / negatives], np.r_[0.0, true_pos / positives]


def tpr_at_fpr(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    """The best true-positive rate of any threshold whose false-positive rate is at most
    ``fpr`` (MIDST's score)."""
    false_pos, true_pos = roc_curve(scores, member)
    return float(true_pos[false_pos <= fpr + 1e-12].max())


def attack_summary(scores: np.ndarray, member: np.ndarray) -> dict:
    """TPR at 10% and 1% FPR and the ROC AUC of one attack's scores."""
    false_pos, true_pos = roc_curve(scores, member)
    return {
        **{f"tpr_at_{fpr:g}_fpr": tpr_at_fpr(scores, member, fpr) for fpr in FALSE_POSITIVE_RATES},
        "auc": float(np.trapezoid(true_pos, false_pos)),
    }


def attack_features(tables: list[pa.Table], reference: pa.Table, columns: list[str]):
    """Gower-like coordinates of several tables, fitted on ``reference``: each number its
    mid-rank among the reference's values (0..1) plus a NULL indicator, each category a one-hot
    scaled so that a mismatch costs 1 (NULL and unseen levels get none)."""
    blocks = [[] for _ in tables]
    for name in columns:
        ref = reference.column(name)
        if is_numeric(ref.type):
            known = np.sort(numeric_values(ref)[np.isfinite(numeric_values(ref))])
            for block, table in zip(blocks, tables, strict=True):
                x = numeric_values(table.column(name))
                missing = ~np.isfinite(x)
                if known.size:
                    low = np.searchsorted(known, x, side="left")
                    high = np.searchsorted(known, x, side="right")
                    rank = (low + high) / (2 * known.size)
                else:
                    rank = np.zeros(len(x))
                block.append(np.where(missing, 0.0, rank)[:, None])
                block.append(missing[:, None].astype(float))
        else:
            for block, onehot in zip(blocks, one_hots(tables, name, ref), strict=True):
                block.append(onehot / np.sqrt(2.0))
    return [
        np.hstack(block) if block else np.zeros((t.num_rows, 0))
        for block, t in zip(blocks, tables, strict=True)
    ]


def closest_record_scores(challenge: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    return -nearest_distances(challenge, synthetic, 1)[:, 0]


def density_ratio_scores(
    challenge: np.ndarray, synthetic: np.ndarray, reference: np.ndarray, k: int = NEIGHBOURS
) -> np.ndarray:
    """log of (synthetic density / reference density) at each row, up to a constant: each
    density by the mean log distance to the k nearest rows (a k-nearest-neighbour estimate,
    log density ~ -d mean log r; d and the table sizes scale every row alike and do not change
    the ranking). Averaging from the nearest row on keeps a copied row's point mass visible,
    which the k-th distance alone would smooth away."""
    to_synthetic = np.log(nearest_distances(challenge, synthetic, k) + TINY_DISTANCE).mean(1)
    to_reference = np.log(nearest_distances(challenge, reference, k) + TINY_DISTANCE).mean(1)
    return to_reference - to_synthetic


def reconstruction_scores(model, challenge: pa.Table, reference: pa.Table, seed: int = 0):
    """Minus the mean error with which the model refills each of a row's observed cells when
    that cell alone is hidden: numbers in reference standard deviations, categories 0 or 1."""
    errors = np.zeros(challenge.num_rows)
    counts = np.zeros(challenge.num_rows)
    for name in model.encoder.modelled_names:
        truth = challenge.column(name)
        observed = ~truth.is_null().to_numpy(zero_copy_only=False)
        if not observed.any():
            continue
        position = challenge.schema.get_field_index(name)
        hidden = challenge.set_column(
            position, challenge.field(name), pa.nulls(challenge.num_rows, truth.type)
        )
        filled = pa.Table.from_batches(
            [model.impute_batch(batch, seed=seed) for batch in hidden.to_batches()],
            schema=hidden.schema,
        ).column(name)
        if is_numeric(truth.type):
            ref = numeric_values(reference.column(name))
            scale = np.nanstd(ref) if np.isfinite(ref).any() else 1.0
            error = np.abs(numeric_values(filled) - numeric_values(truth)) / (scale or 1.0)
        else:
            error = (
                np.asarray(filled.to_pylist(), dtype=object)
                != np.asarray(truth.to_pylist(), dtype=object)
            ).astype(float)
        errors += np.where(observed, np.nan_to_num(error, nan=1.0), 0.0)
        counts += observed
    return -errors / np.maximum(counts, 1)


def black_box_scores(
    challenge: pa.Table, synthetic: pa.Table, reference: pa.Table, columns: list[str]
) -> dict[str, np.ndarray]:
    """Every black-box attack's scores for the challenge rows."""
    x_challenge, x_synthetic, x_reference = attack_features(
        [challenge, synthetic, reference], reference, columns
    )
    return {
        "closest_record": closest_record_scores(x_challenge, x_synthetic),
        "density_ratio": density_ratio_scores(x_challenge, x_synthetic, x_reference),
    }


def challenge_split(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Positions of a sample split for an audit: half members (trained on), a quarter
    non-members for the challenge, a quarter reference rows for the attacker; the challenge
    takes as many members as non-members."""
    order = np.random.default_rng(seed).permutation(rows)
    members, rest = order[: rows // 2], order[rows // 2 :]
    outsiders, reference = rest[: len(rest) // 2], rest[len(rest) // 2 :]
    return {
        "members": np.sort(members),
        "challenge_members": np.sort(members[: len(outsiders)]),
        "non_members": np.sort(outsiders),
        "reference": np.sort(reference),
    }


def audit(fit, real: pa.Table, columns: list[str], seed: int = 0, curve_points: int = 200):
    """Train a model with ``fit(members) -> runtime Model`` on half of ``real``, make as many
    synthetic rows, and attack it with every attack on a 50/50 challenge; also the
    distance-based measures. Returns the report's ``privacy`` section, ROC curves included."""
    split = challenge_split(real.num_rows, seed)
    members = real.take(split["members"])
    model = fit(members)
    synthetic = pa.Table.from_batches([model.synthesize_batch(0, members.num_rows, seed=seed)])
    challenge = pa.concat_tables(
        [real.take(split["challenge_members"]), real.take(split["non_members"])]
    )
    member = np.r_[
        np.ones(len(split["challenge_members"]), bool), np.zeros(len(split["non_members"]), bool)
    ]
    reference = real.take(split["reference"])
    scores = black_box_scores(challenge, synthetic, reference, columns)
    scores["reconstruction"] = reconstruction_scores(model, challenge, reference, seed)
    out = {
        "members": members.num_rows,
        "challenge_rows": challenge.num_rows,
        "reference_rows": reference.num_rows,
        "attacks": {name: attack_summary(s, member) for name, s in scores.items()},
        "closest_record_share": closest_record_share(
            members, real.take(split["non_members"]), synthetic, columns
        ),
        "nearest_record": nearest_record_distances(members, synthetic, columns),
        "curves": {},
    }
    for name, s in scores.items():
        false_pos, true_pos = roc_curve(s, member)
        keep = np.unique(np.linspace(0, len(false_pos) - 1, curve_points).astype(int))
        out["curves"][name] = [false_pos[keep].tolist(), true_pos[keep].tolist()]
    return out
