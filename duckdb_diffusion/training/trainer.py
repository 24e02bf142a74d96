"""Fit the two stages on encoded (incomplete) rows: the column VAE, then the latent denoiser.

Both stages see observed cells only: the VAE's losses are masked by the observation mask, and
the denoiser learns to produce a random subset of each row's observed tokens from the rest
(plus, for some rows, from nothing at all), so one network serves random imputation and
synthesis. The point predictor trains beside it on the same batches and masks; between the
two stages, boosted trees learn each column from the other cells (trees.py), and at the end
each numeric column's blend of trees and predictor is chosen on validation cells.

The denoiser trains until its validation loss stops improving at the lowest of a few learning
rates (convergence), the epoch cap or the time budget, whichever comes first. Results are
bit-reproducible for a seed when the clock is not what stopped a stage. Beside the validation
loss it measures memorisation: how far its loss on training rows has pulled below its loss on
held-out rows (a membership signal), reported in the metrics.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..settings import TrainConfig
from .edm import Precond, denoising_loss
from .networks import ColumnVAE, Denoiser, PointPredictor
from .trees import ColumnTrees, blend_weights, category_rounds, fit_trees
from .trees import features as tree_features

VALIDATE_EVERY_STEPS = 100
VALIDATION_SAMPLES = 2048
# The denoiser's learning rate falls by LR_FACTOR at each plateau, LR_DECAYS times, before a
# last plateau stops training; a validation counts as better below (1 - MIN_IMPROVEMENT) x best.
LR_DECAYS = 3
LR_FACTOR = 0.3
MIN_IMPROVEMENT = 1e-3
BLEND_HIDE = 0.3  # share of validation cells hidden to choose the trees' weights and rounds
HIDE_DRAWS = 3  # draws of those hidden cells over the validation rows


@dataclass
class TrainedModel:
    vae: ColumnVAE
    denoiser: Precond
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    config: TrainConfig
    metrics: dict = field(default_factory=dict)
    validation_rows: np.ndarray | None = None
    predictor: PointPredictor | None = None
    trees: list[ColumnTrees] = field(default_factory=list)
    # The distilled sampler (distil.py) and the levels its steps go through, where trained.
    student: Precond | None = None
    student_levels: list[float] | None = None


# torch's random state is process-wide: two trainings at once (dbt threads, two cursors) would
# draw from one stream and neither would be reproducible, so trainings in a process take turns
# (each still uses every core; on a 2-core machine running them side by side saved nothing).
_ONE_AT_A_TIME = threading.Lock()


def train(
    num: np.ndarray,
    cat: np.ndarray,
    mask: np.ndarray,
    category_sizes: list[int],
    config: TrainConfig,
    derived: frozenset[int] = frozenset(),
) -> TrainedModel:
    """``derived``: columns (modelled positions) whose cells the model's dependencies always
    overwrite (``Dependencies.always_derived``): no boosted trees are fitted for them."""
    with _ONE_AT_A_TIME:
        return _train(num, cat, mask, category_sizes, config, derived)


def _train(
    num: np.ndarray,
    cat: np.ndarray,
    mask: np.ndarray,
    category_sizes: list[int],
    config: TrainConfig,
    derived: frozenset[int] = frozenset(),
) -> TrainedModel:
    if config.epsilon is not None:
        from .private import train_private

        return train_private(num, cat, mask, category_sizes, config)
    torch.manual_seed(config.seed)
    rows = num.shape[0]
    val_rows, fit_rows = split_rows(rows, config)
    data = _tensors(num, cat, mask)
    clock = _Clock(config)

    vae = ColumnVAE(num.shape[1], category_sizes, config.latent_dim, config.vae_hidden)
    vae_metrics = _fit_vae(vae, data, fit_rows, val_rows, config, clock)

    with torch.no_grad():
        mu, _ = vae.encode(data["num"], data["cat"])
        token_mask = data["mask"].unsqueeze(-1).expand_as(mu)
        observed = token_mask.reshape(-1, config.latent_dim)
        flat = mu.reshape(-1, config.latent_dim)
        count = observed.sum(0).clamp(min=1.0)
        mean = (flat * observed).sum(0) / count
        std = (((flat - mean) ** 2 * observed).sum(0) / count).sqrt().clamp(min=1e-3)
        latents = ((mu - mean) / std * token_mask).reshape(rows, -1)

    trees, tree_metrics = [], {}
    categorical_trees = config.category_trees and bool(category_sizes)
    numeric_trees = config.numeric_trees and num.shape[1] > 0
    if (categorical_trees or numeric_trees) and config.tree_share > 0:
        seconds = config.max_seconds * config.tree_share
        trees, tree_metrics = fit_trees(
            num,
            cat,
            mask,
            category_sizes,
            fit_rows,
            val_rows,
            seconds,
            config.seed,
            categorical=categorical_trees,
            numeric=numeric_trees,
            skip=derived,
        )

    dim = latents.shape[1]
    denoiser = Precond(Denoiser(dim, config.width, config.depth, dropout=config.dropout))
    predictor = _PredictorFit(
        PointPredictor(dim, num.shape[1], category_sizes, config.predictor_width, config.depth),
        data,
        max(1, config.patience // 2),
    )
    # A student (distil.py) is kept distil_share of the budget: the teacher stops that much
    # early, and the student has whatever the teacher left (more where it converged first),
    # until it converges itself.
    distilling = 0 < config.distilled_steps < config.sampling_steps
    share = config.max_seconds * config.distil_share
    diff_metrics = _fit_denoiser(
        denoiser,
        predictor,
        latents,
        data["mask"],
        fit_rows,
        val_rows,
        config,
        clock,
        config.max_seconds - share if distilling else config.max_seconds,
    )
    student, levels = None, None
    if distilling:
        from .distil import distil

        student, levels, diff_metrics["distilled"] = distil(
            denoiser, latents, data["mask"], fit_rows, val_rows, config, clock, config.max_seconds
        )
    clock.close()
    best_predictor = predictor.best()
    if trees:
        tree_metrics.update(
            _choose_trees(best_predictor, trees, num, cat, mask, latents, val_rows, config)
        )
    metrics = {
        "rows": int(rows),
        "training_seconds": round(clock.elapsed(), 2),
        "vae": vae_metrics,
        "diffusion": diff_metrics,
        **({"trees": tree_metrics} if tree_metrics else {}),
    }
    # Tables under 10 rows have no held-out rows; the export check then uses training rows.
    check_rows = val_rows if len(val_rows) else fit_rows
    return TrainedModel(
        vae,
        denoiser,
        mean,
        std,
        config,
        metrics,
        check_rows,
        best_predictor,
        trees,
        student,
        levels,
    )


def split_rows(rows: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validation and training rows: a seeded ``validation_share`` of the rows is held out
    (none under 10 rows)."""
    order = np.random.default_rng(config.seed).permutation(rows)
    n_val = max(1, int(rows * config.validation_share)) if rows >= 10 else 0
    return order[:n_val], order[n_val:]


def _choose_trees(predictor, trees, num, cat, mask, latents, val_rows, config) -> dict:
    """Choose, on validation rows with a ``BLEND_HIDE`` share of their observed cells hidden
    (what the exported graph sees when it imputes; HIDE_DRAWS such draws, for more cells),
    each numeric column's share of its trees in the imputed median and each category
    column's rounds of trees, the levels whose trees they keep and the predictor's confidence
    at which they are skipped; trees that would not
    change a value (weight 0, no rounds) are dropped from ``trees``. -> the choices, for the
    training metrics."""
    if not len(val_rows):
        return {}
    rng = np.random.default_rng(config.seed + 2)
    rows = np.tile(val_rows, HIDE_DRAWS)
    observed = mask[rows] > 0
    hidden = observed & (rng.random(observed.shape) < BLEND_HIDE)
    cond = (observed & ~hidden).astype(np.float32)
    with torch.no_grad():
        tokens = _tokens(torch.from_numpy(cond), config.latent_dim)
        net, logits = predictor(latents[rows], tokens)
    x = tree_features(num[rows], cat[rows], cond)
    n_numeric = num.shape[1]
    chosen = {}
    if any(t.numeric for t in trees):
        chosen["weights"] = blend_weights(trees, x, net.numpy(), num[rows], hidden[:, :n_numeric])
        trees[:] = [t for t in trees if not t.numeric or t.weight > 0]
    if any(not t.numeric for t in trees):
        chosen["kept_rounds"] = category_rounds(
            trees, x, [lg.numpy() for lg in logits], cat[rows], hidden[:, n_numeric:]
        )
        chosen["levels_cut"] = {str(t.column): len(t.dropped) for t in trees if t.dropped}
        chosen["gates"] = {str(t.column): t.confident for t in trees if t.confident}
    return chosen


def _fit_vae(vae, data, fit_rows, val_rows, config, clock) -> dict:
    optimizer = adamw(vae.parameters(), lr=2 * config.learning_rate)
    deadline = config.max_seconds * config.vae_share
    best, best_state, stale, epoch = math.inf, None, 0, 0
    for epoch in range(1, config.vae_epochs + 1):
        vae.train()
        for idx in _batches(fit_rows, config.batch_size, config.seed + epoch):
            loss, _ = _vae_loss(vae, data, idx, config.kl_weight, sample=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        vae.eval()
        with torch.no_grad():
            val, parts = _vae_loss(vae, data, val_rows if len(val_rows) else fit_rows, 0.0, False)
        clock.show("vae", epoch, val.item())
        if val.item() < best - 1e-4:
            best, best_state, stale = val.item(), copy.deepcopy(vae.state_dict()), 0
        else:
            stale += 1
        if stale >= config.patience or clock.elapsed() > deadline:
            break
    if best_state is not None:
        vae.load_state_dict(best_state)
    return {
        "epochs": epoch,
        "seconds": round(clock.elapsed(), 2),
        "validation_reconstruction": round(best, 5),
        **parts,
    }


def _vae_loss(vae, data, idx, kl_weight: float, sample: bool):
    num, cat, mask = data["num"][idx], data["cat"][idx], data["mask"][idx]
    mu, logvar = vae.encode(num, cat)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
    num_hat, logits = vae.decode(z)
    n_num = num.shape[1]
    loss = torch.zeros(())
    parts = {}
    if n_num:
        m = mask[:, :n_num]
        mse = ((num_hat - num) ** 2 * m).sum() / m.sum().clamp(min=1.0)
        loss = loss + mse
        parts["numeric_mse"] = round(mse.item(), 5)
    if logits:
        m = mask[:, n_num:]
        ce = torch.stack(
            [F.cross_entropy(lg, cat[:, j], reduction="none") for j, lg in enumerate(logits)], 1
        )
        loss = loss + (ce * m).sum() / m.sum().clamp(min=1.0)
        hits = torch.stack([lg.argmax(-1) == cat[:, j] for j, lg in enumerate(logits)], 1)
        parts["categorical_accuracy"] = round(((hits * m).sum() / m.sum().clamp(min=1.0)).item(), 5)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)
    loss = loss + kl_weight * (kl * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, parts


def _fit_denoiser(
    denoiser, predictor, latents, col_mask, fit_rows, val_rows, config, clock, deadline
) -> dict:
    """Train the denoiser (and the point predictor beside it) until convergence, the epoch
    cap or ``deadline`` (seconds since training began)."""
    optimizer = adamw(denoiser.parameters(), lr=config.learning_rate)
    ema = copy.deepcopy(denoiser).requires_grad_(False).eval()
    latent_dim = config.latent_dim
    held_out = len(val_rows) > 0
    val_rows = val_rows if held_out else fit_rows[: config.batch_size]
    # Small tables: repeat validation rows (each copy gets its own mask and noise) so the
    # validation loss is steady enough to stop on.
    repeats = -(-VALIDATION_SAMPLES // len(val_rows))
    # As many training rows, scored on the same draw: how much lower their loss is than the
    # held-out rows' is what the denoiser knows of its own rows beyond the population. (A stop
    # on it was tried: on default, 1,000 rows, stopping at a growth of 0.05 cut the density
    # attack's TPR@10%FPR from 0.153 to 0.128 but raised detection AUC from 0.735 to 0.906.)
    seen_rows = None
    if held_out:
        seen_rows = np.random.default_rng(config.seed + 3).permutation(fit_rows)[: len(val_rows)]
        seen_rows = np.tile(seen_rows, repeats)
    val_rows = np.tile(val_rows, repeats)
    val_state = torch.random.get_rng_state()
    best, best_state, stale, epoch, steps, validated = math.inf, None, 0, 0, 0, 0
    first_gap, memorised, best_memorised = None, 0.0, 0.0
    started = best_at = clock.elapsed()
    rate, decays, stopped = config.learning_rate, 0, "epochs"
    for epoch in range(1, config.diffusion_epochs + 1):
        denoiser.train()
        for group in optimizer.param_groups:
            group["lr"] = rate
        for idx in _batches(fit_rows, config.batch_size, config.seed + 10_000 + epoch):
            cond, target = _condition_masks(col_mask[idx], config.unconditional_share)
            loss = denoising_loss(
                denoiser, latents[idx], _tokens(cond, latent_dim), _tokens(target, latent_dim)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            decay = min(config.ema_decay, (1 + steps) / (10 + steps))
            _ema_update(ema, denoiser, decay)
            predictor.step(idx, latents[idx], cond, target, rate, decay)
        out_of_time = clock.elapsed() > deadline
        last_epoch = epoch == config.diffusion_epochs or out_of_time
        if steps - validated < VALIDATE_EVERY_STEPS and not last_epoch:
            continue
        validated = steps
        # A fixed draw of masks and noise makes validation losses comparable across epochs.
        train_state = torch.random.get_rng_state()
        with torch.no_grad():
            draw = (ema, latents, col_mask)
            val, cond, target = _fixed_draw_loss(*draw, val_rows, val_state, config)
            predictor.validate(val_rows, latents[val_rows], cond, target)
            if seen_rows is not None:
                seen = _fixed_draw_loss(*draw, seen_rows, val_state, config)[0]
                gap = 1.0 - seen / val
                first_gap = gap if first_gap is None else first_gap
                memorised = gap - first_gap
        torch.random.set_rng_state(train_state)
        clock.show("diffusion", epoch, val)
        if val < best * (1 - MIN_IMPROVEMENT):
            best, best_state, stale = val, copy.deepcopy(ema.state_dict()), 0
            best_at, best_memorised = clock.elapsed(), memorised
        else:
            stale += 1
        # Convergence, not the clock, ends a default run: each plateau of ``patience``
        # validations lowers the learning rate, and a plateau at the lowest rate stops. The
        # schedule depends on validation losses only, so a run stopped this way is the same
        # for a seed on any machine; the time budget is a cap (a run it stops is not).
        if stale >= config.patience:
            if decays == LR_DECAYS:
                stopped = "converged"
                break
            rate, decays, stale = rate * LR_FACTOR, decays + 1, 0
        if out_of_time:
            stopped = "time"
            break
    ema.load_state_dict(best_state if best_state is not None else ema.state_dict())
    denoiser.load_state_dict(ema.state_dict())
    denoiser.eval()
    return {
        "epochs": epoch,
        "steps": steps,
        # The diffusion stage's own seconds, and when (since training began) it reached the
        # best validation loss: time to convergence, where patience stopped it.
        "seconds": round(clock.elapsed() - started, 2),
        "best_at_seconds": round(best_at, 2),
        "validation_loss": round(best, 5),
        "stopped_by": stopped,
        "learning_rate_decays": decays,
        # Training rows' loss below held-out rows' (as a share) at the kept model, beyond the
        # gap at the first validation: 0 is a denoiser that knows its rows no better than others.
        "memorisation": round(best_memorised, 4),
        **predictor.metrics(),
    }


class _PredictorFit:
    """Trains the point predictor beside the denoiser, on the same batches and 'given' masks,
    keeping the average of its weights (EMA) that scored best on the validation loss."""

    def __init__(self, predictor: PointPredictor, data: dict, patience: int):
        self.predictor = predictor
        self.num, self.cat = data["num"], data["cat"]
        self.n_numeric = self.num.shape[1]
        self.best_loss, self.best_state = math.inf, None
        # A supervised head converges long before the denoiser: once it stops improving it
        # stops training, and the rest of the budget goes to the denoiser (synthesis quality).
        self.patience, self.stale, self.stopped_at_step = patience, 0, None
        self.steps = 0
        self.optimizer = adamw(predictor.parameters())
        self.ema = copy.deepcopy(predictor).requires_grad_(False).eval()

    def _loss(self, predictor, idx, latents, cond, target) -> torch.Tensor:
        """Absolute error on the target numeric cells plus cross-entropy on the target
        categorical cells, averaged over target cells."""
        latent_dim = latents.shape[1] // cond.shape[1]
        num, logits = predictor(latents, _tokens(cond, latent_dim))
        total = (torch.abs(num - self.num[idx]) * target[:, : self.n_numeric]).sum()
        if logits:
            labels = self.cat[idx]
            ce = torch.stack(
                [
                    F.cross_entropy(lg, labels[:, j], reduction="none")
                    for j, lg in enumerate(logits)
                ],
                1,
            )
            total = total + (ce * target[:, self.n_numeric :]).sum()
        return total / target.sum().clamp(min=1.0)

    def step(self, idx, latents, cond, target, rate: float, decay: float) -> None:
        if self.stopped_at_step is not None:
            return
        self.steps += 1
        self.predictor.train()
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        loss = self._loss(self.predictor, idx, latents, cond, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        _ema_update(self.ema, self.predictor, decay)

    def validate(self, idx, latents, cond, target) -> None:
        if self.stopped_at_step is not None:
            return
        loss = self._loss(self.ema, idx, latents, cond, target).item()
        if loss < self.best_loss - 1e-4:
            self.best_loss, self.best_state = loss, copy.deepcopy(self.ema.state_dict())
            self.stale = 0
        else:
            self.stale += 1
            if self.stale >= self.patience:
                self.stopped_at_step = self.steps

    def best(self) -> PointPredictor:
        if self.best_state is not None:
            self.ema.load_state_dict(self.best_state)
        return self.ema.eval()

    def metrics(self) -> dict:
        if not math.isfinite(self.best_loss):
            return {}
        return {
            "predictor_validation_loss": round(self.best_loss, 5),
            "predictor_steps": self.steps,
        }


def _fixed_draw_loss(ema, latents, col_mask, rows, state, config):
    """The denoising loss of ``rows`` on one fixed draw of masks and noise (torch's random
    state ``state``), so that validations compare across epochs and across row sets."""
    torch.random.set_rng_state(state)
    generator = torch.Generator().manual_seed(config.seed + 1)
    cond, target = _condition_masks(col_mask[rows], config.unconditional_share, generator)
    tokens = _tokens(cond, config.latent_dim), _tokens(target, config.latent_dim)
    return denoising_loss(ema, latents[rows], *tokens).item(), cond, target


def _condition_masks(col_mask: torch.Tensor, unconditional_share: float, generator=None):
    """Random 'given' subsets of each row's observed columns; the rest of them are targets."""
    rows = col_mask.shape[0]
    keep_rate = torch.rand(rows, 1, generator=generator)
    keep_rate = torch.where(
        torch.rand(rows, 1, generator=generator) < unconditional_share, 0.0, keep_rate
    )
    cond = col_mask * (torch.rand(col_mask.shape, generator=generator) < keep_rate).float()
    return cond, col_mask - cond


def _tokens(col_mask: torch.Tensor, latent_dim: int) -> torch.Tensor:
    return col_mask.repeat_interleave(latent_dim, dim=1)


def adamw(parameters, lr: float = 1e-3) -> torch.optim.AdamW:
    """AdamW as every stage here trains with it, in torch's fused form: the same update,
    one kernel for all parameters instead of a dozen small ops per parameter tensor. On 2
    cores it took the denoiser's step from 1.6 to 0.5 ms of a ~6 ms training step (256 rows)."""
    return torch.optim.AdamW(parameters, lr=lr, fused=True)


def _ema_update(ema, model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all parameter tensors in one call."""
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def _batches(rows: np.ndarray, batch_size: int, seed: int):
    shuffled = np.random.default_rng(seed).permutation(rows)
    for start in range(0, len(shuffled), batch_size):
        yield torch.from_numpy(shuffled[start : start + batch_size])


def _tensors(num, cat, mask) -> dict:
    return {
        "num": torch.from_numpy(np.ascontiguousarray(num, dtype=np.float32)),
        "cat": torch.from_numpy(np.ascontiguousarray(cat, dtype=np.int64)),
        "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)),
    }


class _Clock:
    """Elapsed time against the budget, shown on one progress bar."""

    def __init__(self, config: TrainConfig):
        self.start = time.perf_counter()
        self.budget = config.max_seconds
        self.bar = None
        self.shown = 0.0
        if config.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=int(self.budget), unit="s", desc="training", leave=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.elapsed() > self.budget

    def show(self, stage: str, epoch: int, loss: float) -> None:
        """Redraw at most twice a second: small tables run thousands of epochs."""
        if self.bar is None or time.perf_counter() - self.shown < 0.5:
            return
        self.shown = time.perf_counter()
        self.bar.n = min(int(self.elapsed()), self.bar.total)
        self.bar.set_postfix_str(f"{stage} epoch {epoch} val {loss:.4f}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
