"""Training settings: every knob of ``train``, validated without torch.

Kept apart from the training package so that every door (SQL at bind time, Python, the CLI)
checks settings before any table is scanned or torch is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """Every knob of training; stored in the artifact so a model says how it was made."""

    seed: int = 0
    max_seconds: float = 240.0
    vae_share: float = 0.15  # of the time budget
    vae_epochs: int = 60
    diffusion_epochs: int = 1000
    # Validations (at least VALIDATE_EVERY_STEPS apart) without improvement before the
    # denoiser's learning rate falls (and, at the lowest rate, training stops); epochs for the VAE.
    patience: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    # Per column: 4 dimensions keep a category's levels apart in latent space (adult, 5,000
    # rows, 60 s: column shape 0.051 -> 0.035, pair trend 0.096 -> 0.079 against 2).
    latent_dim: int = 4
    vae_hidden: int = 64
    kl_weight: float = 0.005
    # The denoiser runs sampling_steps times per synthetic row, the predictor once per imputed
    # row: a narrower denoiser buys synthesis speed where quality held (width 160 vs 256 on
    # california and adult: column shape 0.045 vs 0.044, 0.071 vs 0.073). So does a narrower
    # predictor: 128 against 256 gave equal or lower MAE on all three datasets under MCAR and
    # MAR (5,000 rows, accuracy within 0.005; full adult, held-out: MAE 0.4076 vs 0.4073,
    # accuracy 0.745 vs 0.747), and its network takes a third less time (benchmarks/README,
    # speed pass of 2026-12-06, morning: "A narrower point predictor").
    width: int = 160
    predictor_width: int = 128
    depth: int = 3
    # Dropout inside the denoiser's residual blocks, off by default. On small tables it trades
    # fidelity for privacy: default, 1,000 rows, 0.1 took the density attack's TPR@10%FPR from
    # 0.153 to 0.141 at a detection AUC of 0.770 against 0.735 (benchmarks/README.md).
    dropout: float = 0.0
    ema_decay: float = 0.998
    unconditional_share: float = 0.1
    # DPM-Solver++(2M) steps, one network evaluation each, over edm.py's schedule (sigma 20
    # down to 0.02, rho 12). On EDM's schedule 8 steps left synthetic rows easy to tell from
    # real ones (adult detection AUC 0.634, 0.590 at 12); on this one 8 give 0.593.
    sampling_steps: int = 8
    # With 0 < distilled_steps < sampling_steps, a copy of the denoiser learns to take the
    # sampler's path in that many steps (training/distil.py) in the last distil_share of the
    # budget (or more, where the denoiser converged sooner), and the synthesis graph runs it,
    # one network evaluation a step, where its draws land near the teacher's (a student cut
    # short by the budget is not used). 4 by default: half the arithmetic of a synthetic row
    # (and of a conditional draw), with detection AUC within 0.01 of the 8-step teacher's
    # on adult and california; 2 steps lost more (benchmarks/README, "A distilled sampler").
    # 0: no student, the whole budget for the teacher.
    distilled_steps: int = 4
    distil_share: float = 0.25
    # Store beside each graph a copy with its matrix products in 8 bits (onnxruntime's static
    # quantization: signed weights per output column, each product's input range fixed from
    # training rows), which the runtime runs where the CPU multiplies them exactly (VNNI / AMX;
    # ``DUCKDB_DIFFUSION_INT8`` chooses): 26-29% less time per row on the adult graphs.
    int8: bool = True
    validation_share: float = 0.1
    max_rows: int = 200_000
    # Boosted trees for categorical cells beside the point predictor (trees.py), with at most
    # this share of the budget; off, imputation of categories is the predictor's alone.
    category_trees: bool = True
    # Absolute-error boosted trees for numeric cells, blended with the predictor's median at
    # a per-column weight chosen on validation cells (trees.py); share the tree budget.
    numeric_trees: bool = True
    tree_share: float = 0.1
    # Differential privacy (training/private.py): with epsilon set, every network trains with
    # DP-SGD to (epsilon, delta); delta defaults to 1 / (10 x training rows).
    epsilon: float | None = None
    delta: float | None = None
    progress: bool = True

    def __post_init__(self):
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.type == "float | None" and value is None:
                continue
            if setting.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"setting {setting.name} must be true or false, got {value!r}")
                continue
            low, high = _LIMITS[setting.name]
            integral = setting.type == "int"  # "float | None" set is checked as a float
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or (integral and int(value) != value) or not low <= value <= high:
                kind = "an integer" if integral else "a number"
                raise ValueError(
                    f"setting {setting.name} must be {kind} in [{low}, {high}], got {value!r}"
                )
            setattr(self, setting.name, int(value) if integral else float(value))

    def to_json(self) -> dict:
        return asdict(self)


# Inclusive bounds of each numeric setting: wide enough for any sane use, narrow enough to
# turn a typo (a negative budget, a share above 1) into an error before any work is done.
_LIMITS = {
    "seed": (0, 2**63 - 1),
    "max_seconds": (1e-3, 7 * 24 * 3600),
    "vae_share": (0.01, 0.99),
    "vae_epochs": (1, 100_000),
    "diffusion_epochs": (1, 1_000_000),
    "patience": (1, 1_000_000),
    "batch_size": (2, 1_000_000),
    "learning_rate": (1e-8, 1.0),
    "latent_dim": (1, 64),
    "vae_hidden": (1, 8192),
    "kl_weight": (0.0, 100.0),
    "width": (1, 16384),
    "predictor_width": (1, 16384),
    "depth": (0, 64),
    "dropout": (0.0, 0.9),
    "ema_decay": (0.0, 0.999999),
    "unconditional_share": (0.0, 1.0),
    "sampling_steps": (1, 1000),
    "distilled_steps": (0, 999),
    "distil_share": (0.01, 0.9),
    "validation_share": (0.0, 0.9),
    "max_rows": (2, 10**9),
    "tree_share": (0.0, 0.9),
    "epsilon": (0.01, 1000.0),
    "delta": (1e-15, 0.01),
}


def make_config(settings: dict) -> TrainConfig:
    """``settings`` (names of ``TrainConfig`` fields) as a checked config; unknown names and
    out-of-range values are errors that name the setting."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    return TrainConfig(**settings)


# Training settings that choose how columns are read rather than configure training.
COLUMN_CHOICES = ("categorical", "passthrough")


def config_of(settings: dict) -> TrainConfig:
    """The ``TrainConfig`` part of a door's settings (which may also hold ``COLUMN_CHOICES``)."""
    return make_config({k: v for k, v in settings.items() if k not in COLUMN_CHOICES})
