"""Differentially private training (``epsilon`` set): DP-SGD for every network that learns from
the rows, accounted by opacus.

What the guarantee covers: the column VAE, the denoiser and the point predictor are trained
with per-row clipped gradients plus Gaussian noise on Poisson-sampled batches (Abadi et al.
2016), and opacus's RDP accountant turns the steps taken into the (epsilon, delta) spent; the
noise is calibrated before training so that the planned steps spend exactly the requested
epsilon (a run the clock stops early spends less, and says so). Everything the rows decide is
made private or left out: no boosted trees (they have no DP training here), no missingness
chain (NULLs are drawn per column at their rate), no column dependencies (dependencies.py), no
model selection or learning-rate schedule on validation rows (fixed steps; validation rows are
never trained on and only score the finished model in its summary), latents unnormalised (the
VAE's prior already scales them).

What it does not cover, said in the summary (``metrics.privacy.not_covered``): the encoding's
per-column statistics, read from the rows before training (numeric quantile knots, value grids
and spikes, category levels, NULL shares). Every model, private or not, keeps only levels seen
in at least ``encoding.MIN_LEVEL_ROWS`` rows and clips numbers inside the ``MIN_LEVEL_ROWS``-th
smallest and largest values, so no single row's rare level or extreme value is stored.

Per-row gradients come from opacus's layer hooks for the denoiser and the predictor (plain
Linear/LayerNorm networks) and from ``torch.func`` (vmap over rows) for the column VAE, which
keeps its own parameter tensors (an einsum over columns) that the hooks do not support.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .edm import P_MEAN, P_STD, Precond, denoising_terms
from .networks import ColumnVAE, Denoiser, PointPredictor

CLIP_NORM = 1.0  # each row's gradient is scaled to at most this norm before noise is added
VAE_EPOCHS = 20
DIFFUSION_EPOCHS = 60  # expected passes over the rows; the predictor trains on the same batches
MAX_WIDTH = 128  # DP-SGD's noise grows with the parameters it spreads over: small networks win
MIN_BATCH, MAX_BATCH = 256, 2048
BUDGET_USE = 0.85  # of the seconds left when the plan is fitted to the time budget
ACCOUNTANT = "rdp"


class PrivacyPlan:
    """Sampling rate, steps and noise multiplier for a target (epsilon, delta), and the
    accountant that records what was spent.

    The steps are ``VAE_EPOCHS`` and ``DIFFUSION_EPOCHS`` expected passes over the rows, cut
    down alike if the time budget cannot hold them (``fit_budget``); the noise is then
    calibrated so that exactly those steps spend the target epsilon."""

    def __init__(self, epsilon: float, delta: float | None, rows: int):
        self.target_epsilon = epsilon
        self.delta = delta if delta is not None else 1.0 / (10 * rows)
        self.batch = int(min(rows, max(MIN_BATCH, min(MAX_BATCH, rows // 20))))
        self.sample_rate = self.batch / rows
        passes = math.ceil(1 / self.sample_rate)
        self.vae_steps = VAE_EPOCHS * passes
        self.diffusion_steps = DIFFUSION_EPOCHS * passes
        self.noise_multiplier = 1.0  # until fit_budget calibrates it
        self.planned = 0
        self.taken = 0
        self.accountant = None

    def fit_budget(self, seconds: float, vae_step: float, diffusion_step: float) -> None:
        """Keep the planned steps within ``BUDGET_USE`` of ``seconds`` (the measured seconds
        per step given), then calibrate the noise multiplier for them."""
        from opacus.accountants import RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier

        needed = self.vae_steps * vae_step + self.diffusion_steps * diffusion_step
        share = min(1.0, BUDGET_USE * seconds / needed) if needed > 0 else 1.0
        self.vae_steps = max(1, int(self.vae_steps * share))
        self.diffusion_steps = max(1, int(self.diffusion_steps * share))
        # Each diffusion batch is used twice (denoiser and predictor): two mechanisms a step.
        self.planned = self.vae_steps + 2 * self.diffusion_steps
        self.noise_multiplier = get_noise_multiplier(
            target_epsilon=self.target_epsilon,
            target_delta=self.delta,
            sample_rate=self.sample_rate,
            steps=self.planned,
            accountant=ACCOUNTANT,
        )
        self.accountant = RDPAccountant()

    def step(self) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.taken += 1

    def spent(self) -> dict:
        epsilon = self.accountant.get_epsilon(self.delta) if self.taken else 0.0
        return {
            "epsilon": round(float(epsilon), 4),
            "target_epsilon": self.target_epsilon,
            "delta": self.delta,
            "accountant": f"{ACCOUNTANT} (opacus)",
            "noise_multiplier": round(float(self.noise_multiplier), 4),
            "clip_norm": CLIP_NORM,
            "sample_rate": round(self.sample_rate, 6),
            "expected_batch": self.batch,
            "steps": self.taken,
            "planned_steps": self.planned,
            "covers": ["column VAE", "denoiser", "point predictor"],
            "not_covered": [
                "numeric quantile knots, grids and spikes",
                "category levels (each seen in at least MIN_LEVEL_ROWS rows)",
                "per-column NULL shares",
            ],
            "left_out": [
                "boosted trees",
                "missingness chain",
                "column dependencies",
                "validation-based selection",
            ],
        }


def poisson_batch(rows: np.ndarray, rate: float, rng: np.random.Generator) -> torch.Tensor:
    """Each row independently with probability ``rate``: the sampling the accountant assumes."""
    return torch.from_numpy(rows[rng.random(len(rows)) < rate])


def functional_grads(loss: nn.Module, inputs: tuple) -> dict[str, torch.Tensor]:
    """Per-row gradients of ``loss`` (one row's inputs -> its loss) by vmap over rows: for
    networks with parameters outside opacus's supported layers (the column VAE)."""
    params = {k: p.detach() for k, p in loss.named_parameters() if p.requires_grad}

    def one_row(p, *row):
        return functional_call(loss, p, tuple(r.unsqueeze(0) for r in row)).squeeze()

    return vmap(grad(one_row), in_dims=(None, *[0] * len(inputs)))(params, *inputs)


def hooked_grads(loss, inputs: tuple) -> dict[str, torch.Tensor]:
    """Per-row gradients by opacus's layer hooks (``loss`` a GradSampleModule over a module
    that returns one loss per row): much faster than vmap for plain Linear/LayerNorm nets."""
    loss.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # torch's note that the inputs need no gradient: they don't
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss(*inputs).sum().backward()
    return {k: p.grad_sample for k, p in loss.named_parameters() if p.requires_grad}


def private_step(loss, inputs: tuple, optimizer, plan: PrivacyPlan, gen, per_row) -> None:
    """One DP-SGD step: each row's gradient (``per_row(loss, inputs)``) is clipped to
    ``CLIP_NORM``, the sum gets N(0, (noise_multiplier * CLIP_NORM)^2) noise and is divided by
    the expected batch size (Poisson batches vary in size, an empty one is noise alone)."""
    named = {k: p for k, p in loss.named_parameters() if p.requires_grad}
    rows = inputs[0].shape[0]
    sums = {k: torch.zeros_like(p) for k, p in named.items()}
    if rows:
        grads = per_row(loss, inputs)
        norms = torch.sqrt(sum(g.reshape(rows, -1).pow(2).sum(1) for g in grads.values()))
        scale = (CLIP_NORM / (norms + 1e-6)).clamp(max=1.0)
        sums = {k: torch.einsum("b,b...->...", scale, grads[k]) for k in named}
    for name, p in named.items():
        noise = torch.randn(p.shape, generator=gen) * plan.noise_multiplier * CLIP_NORM
        p.grad = (sums[name] + noise) / plan.batch
        p.grad_sample = None
    optimizer.step()
    plan.step()


class VAELoss(nn.Module):
    """One row's VAE loss, normalised by the number of columns (not by the batch's observed
    cells, which would tie one row's gradient to the others')."""

    def __init__(self, vae: ColumnVAE, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, num, cat, mask, eps):
        mu, logvar = self.vae.encode(num, cat)
        num_hat, logits = self.vae.decode(mu + eps * (0.5 * logvar).exp())
        n_num = num.shape[1]
        total = ((num_hat - num) ** 2 * mask[:, :n_num]).sum()
        for j, lg in enumerate(logits):
            ce = F.cross_entropy(lg, cat[:, j], reduction="none")
            total = total + (ce * mask[:, n_num + j]).sum()
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)
        return (total + self.kl_weight * (kl * mask).sum()) / mask.shape[1]


class DenoiserLoss(nn.Module):
    def __init__(self, denoiser: Precond):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, z, cond, target, sigma, noise):
        """One loss per row."""
        return denoising_terms(self.denoiser, z, cond, target, sigma, noise).sum(1) / z.shape[1]


class PredictorLoss(nn.Module):
    def __init__(self, predictor: PointPredictor, n_numeric: int):
        super().__init__()
        self.predictor, self.n_numeric = predictor, n_numeric

    def forward(self, latents, cond_tokens, cond, target, num, cat):
        """One loss per row."""
        values, logits = self.predictor(latents, cond_tokens)
        total = (torch.abs(values - num) * target[:, : self.n_numeric]).sum(1)
        for j, lg in enumerate(logits):
            ce = F.cross_entropy(lg, cat[:, j], reduction="none")
            total = total + ce * target[:, self.n_numeric + j]
        return total / cond.shape[1]


def train_private(num, cat, mask, category_sizes, config):
    """The private counterpart of ``trainer._train``: the same networks, masks and split,
    trained for the planned DP-SGD steps (fitted to the time budget by timing one step of
    each stage on copies of the networks first)."""
    from opacus import GradSampleModule

    from . import trainer

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 3)
    gen = torch.Generator().manual_seed(config.seed + 4)
    val_rows, fit_rows = trainer.split_rows(len(num), config)
    data = trainer._tensors(num, cat, mask)
    clock = trainer._Clock(config)
    plan = PrivacyPlan(config.epsilon, config.delta, len(fit_rows))
    latent_dim, n_numeric, n_columns = config.latent_dim, num.shape[1], mask.shape[1]
    dim = n_columns * latent_dim

    vae = ColumnVAE(n_numeric, category_sizes, latent_dim, min(config.vae_hidden, MAX_WIDTH))
    denoiser = Precond(
        Denoiser(dim, min(config.width, MAX_WIDTH), config.depth, dropout=config.dropout)
    )
    width = min(config.predictor_width, MAX_WIDTH)
    predictor = PointPredictor(dim, n_numeric, category_sizes, width, config.depth)

    def vae_step(loss, optimizer, counted):
        idx = poisson_batch(fit_rows, plan.sample_rate, rng)
        eps = torch.randn(len(idx), n_columns, latent_dim)
        inputs = (data["num"][idx], data["cat"][idx], data["mask"][idx], eps)
        private_step(
            loss, inputs, optimizer, plan if counted else _Uncounted(plan), gen, functional_grads
        )

    def diffusion_step(losses, optimizers, latents, counted):
        idx = poisson_batch(fit_rows, plan.sample_rate, rng)
        cond, target = trainer._condition_masks(data["mask"][idx], config.unconditional_share)
        z = latents[idx]
        given, wanted = trainer._tokens(cond, latent_dim), trainer._tokens(target, latent_dim)
        sigma = (torch.randn(len(idx), 1) * P_STD + P_MEAN).exp()
        steps_by = plan if counted else _Uncounted(plan)
        inputs = (z, given, wanted, sigma, torch.randn_like(z))
        private_step(losses[0], inputs, optimizers[0], steps_by, gen, hooked_grads)
        cells = (z, given, cond, target, data["num"][idx], data["cat"][idx])
        private_step(losses[1], cells, optimizers[1], steps_by, gen, hooked_grads)

    def stage(vae, denoiser, predictor):
        vae_loss = VAELoss(vae, config.kl_weight)
        losses = (
            GradSampleModule(DenoiserLoss(denoiser), loss_reduction="sum"),
            GradSampleModule(PredictorLoss(predictor, n_numeric), loss_reduction="sum"),
        )
        optimizers = (
            torch.optim.Adam(vae.parameters(), lr=2 * config.learning_rate),
            torch.optim.Adam(denoiser.parameters(), lr=config.learning_rate),
            torch.optim.Adam(predictor.parameters(), lr=config.learning_rate),
        )
        return vae_loss, losses, optimizers

    # Time one step of each stage (the second: the first pays for warming up) on copies.
    copies = stage(*(copy.deepcopy(m) for m in (vae, denoiser, predictor)))
    probe_latents = torch.randn(len(num), dim)
    seconds = []
    for run in (
        lambda: vae_step(copies[0], copies[2][0], False),
        lambda: diffusion_step(copies[1], copies[2][1:], probe_latents, False),
    ):
        run()
        started = clock.elapsed()
        run()
        seconds.append(clock.elapsed() - started)
    plan.fit_budget(config.max_seconds - clock.elapsed(), *seconds)

    vae_loss, losses, optimizers = stage(vae, denoiser, predictor)
    for _ in range(plan.vae_steps):
        if clock.out_of_time():
            break
        vae_step(vae_loss, optimizers[0], True)
    vae_steps = plan.taken
    vae.eval()
    with torch.no_grad():  # the VAE's prior scales latents: no statistics of the rows here
        mu, _ = vae.encode(data["num"], data["cat"])
        latents = (mu * data["mask"].unsqueeze(-1)).reshape(len(num), -1)
    ema, predictor_ema = (copy.deepcopy(m).requires_grad_(False) for m in (denoiser, predictor))
    steps = 0
    while steps < plan.diffusion_steps and not clock.out_of_time():
        diffusion_step(losses, optimizers[1:], latents, True)
        steps += 1
        decay = min(config.ema_decay, (1 + steps) / (10 + steps))
        trainer._ema_update(ema, denoiser, decay)
        trainer._ema_update(predictor_ema, predictor, decay)
    clock.close()
    denoiser.load_state_dict(ema.state_dict())
    denoiser.eval()
    metrics = {
        "rows": int(len(num)),
        "training_seconds": round(clock.elapsed(), 2),
        "vae": {"steps": vae_steps},
        "diffusion": {
            "steps": steps,
            "stopped_by": "planned steps" if steps == plan.diffusion_steps else "time",
            # A student would learn from the rows' cells (the given tokens of its conditional
            # draws) outside DP-SGD's accounting: a private model keeps the teacher's sampler.
            **({"distilled": "not under epsilon"} if config.distilled_steps else {}),
        },
        "privacy": plan.spent(),
    }
    return trainer.TrainedModel(
        vae,
        denoiser,
        torch.zeros(latent_dim),
        torch.ones(latent_dim),
        config,
        metrics,
        val_rows if len(val_rows) else fit_rows,
        predictor_ema.eval(),
        [],
    )


class _Uncounted:
    """A plan's batch and noise for the speed probe, whose steps (on copies) are not taken."""

    def __init__(self, plan: PrivacyPlan):
        self.batch, self.noise_multiplier = plan.batch, plan.noise_multiplier

    def step(self) -> None:
        pass
