"""Small SVG charts for evaluation reports: written by hand so a report needs no plotting
library (the runtime depends on duckdb, pyarrow, numpy and onnxruntime only).

Every function returns one self-contained ``<svg>`` string; real data is blue, model output
orange throughout.
"""

from __future__ import annotations

from html import escape

import numpy as np

REAL, MODEL = "#1f77b4", "#ff7f0e"
WIDTH, HEIGHT, PAD = 320, 200, 34


def histograms(title: str, real: np.ndarray, synthetic: np.ndarray, bins: int = 30) -> str:
    """Real and synthetic densities of a number, as two step lines over the real 1-99% range."""
    real, synthetic = real[np.isfinite(real)], synthetic[np.isfinite(synthetic)]
    if not real.size:
        return _frame(title, "")
    low, high = np.quantile(real, [0.01, 0.99])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    densities = [
        np.histogram(np.clip(v, low, high), edges)[0] / max(len(v), 1) for v in (real, synthetic)
    ]
    top = max(d.max() for d in densities) or 1.0
    body = ""
    for density, colour in zip(densities, (REAL, MODEL), strict=True):
        points = []
        for i, value in enumerate(density):
            y = _y(value / top)
            points += [(_x(i / bins), y), (_x((i + 1) / bins), y)]
        body += _polyline(points, colour)
    body += _axis_labels(f"{low:.4g}", f"{high:.4g}") + _legend("real", "synthetic")
    return _frame(title, body)


def bars(title: str, levels: list[str], real: np.ndarray, synthetic: np.ndarray) -> str:
    """Level frequencies side by side, real beside synthetic (the most frequent levels)."""
    top = max(real.max(initial=0), synthetic.max(initial=0)) or 1.0
    slot = (WIDTH - 2 * PAD) / max(len(levels), 1)
    base = HEIGHT - 55  # room below for slanted level names
    body = ""
    for i, level in enumerate(levels):
        for j, (share, colour) in enumerate(((real[i], REAL), (synthetic[i], MODEL))):
            height = (base - PAD) * share / top
            x = PAD + i * slot + j * slot * 0.4 + slot * 0.1
            body += (
                f'<rect x="{x:.1f}" y="{base - height:.1f}" width="{slot * 0.4:.1f}" '
                f'height="{height:.1f}" fill="{colour}"><title>{escape(str(level))}: '
                f"{share:.3f}</title></rect>"
            )
        label = escape(str(level)[:14])
        x, y = PAD + (i + 0.5) * slot, base + 8
        body += (
            f'<text x="{x:.1f}" y="{y}" font-size="7" text-anchor="end" '
            f'transform="rotate(-40 {x:.1f} {y})">{label}</text>'
        )
    return _frame(title, body + _legend("real", "synthetic"))


def heatmap(title: str, names: list[str], matrix: np.ndarray) -> str:
    """A square matrix of associations in [-1, 1]: red positive, blue negative; rows named."""
    size = HEIGHT - PAD - 10
    cell = size / max(len(names), 1)
    left = 80
    body = ""
    for i, name in enumerate(names):
        y = PAD + (i + 0.7) * cell
        body += (
            f'<text x="{left - 4}" y="{y:.1f}" font-size="{min(8, cell):.1f}" '
            f'text-anchor="end">{escape(name[:16])}</text>'
        )
    for i in range(len(names)):
        for j in range(len(names)):
            value = float(np.clip(np.nan_to_num(matrix[i, j]), -1, 1))
            shade = int(255 * (1 - abs(value)))
            colour = f"rgb(255,{shade},{shade})" if value >= 0 else f"rgb({shade},{shade},255)"
            body += (
                f'<rect x="{left + j * cell:.1f}" y="{PAD + i * cell:.1f}" width="{cell:.1f}" '
                f'height="{cell:.1f}" fill="{colour}"><title>{escape(names[i])} / '
                f"{escape(names[j])}: {value:.2f}</title></rect>"
            )
    return _frame(title, body, width=left + size + 10)


def scatter(title: str, true: np.ndarray, imputed: np.ndarray, limit: int = 600) -> str:
    """Imputed against true values of hidden cells, with the diagonal a perfect fill lies on."""
    keep = np.isfinite(true) & np.isfinite(imputed)
    true, imputed = true[keep][:limit], imputed[keep][:limit]
    if not true.size:
        return _frame(title, "")
    low, high = np.quantile(np.concatenate([true, imputed]), [0.01, 0.99])
    span = (high - low) or 1.0
    body = _polyline([(_x(0), _y(0)), (_x(1), _y(1))], "#999")
    for t, m in zip(true, imputed, strict=True):
        x, y = _x(np.clip((t - low) / span, 0, 1)), _y(np.clip((m - low) / span, 0, 1))
        body += f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{MODEL}" fill-opacity="0.5"/>'
    body += _axis_labels(f"true {low:.4g}", f"{high:.4g}") + _legend("", "imputed")
    return _frame(title, body)


ATTACK_COLOURS = ("#d62728", "#2ca02c", "#9467bd", "#8c564b")


def roc(title: str, curves: dict[str, tuple[list, list]]) -> str:
    """Membership-inference ROC curves (true- against false-positive rate), one line an attack,
    beside the diagonal that guessing follows; the low-FPR corner is what matters."""
    body = _polyline([(_x(0), _y(0)), (_x(1), _y(1))], "#999")
    for i, (name, (false_pos, true_pos)) in enumerate(curves.items()):
        colour = ATTACK_COLOURS[i % len(ATTACK_COLOURS)]
        points = [(_x(f), _y(t)) for f, t in zip(false_pos, true_pos, strict=True)]
        body += _polyline(points, colour)
        body += (
            f'<text x="{_x(0.62):.1f}" y="{_y(0.05) - 11 * i:.1f}" font-size="9" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    return _frame(title, body + _axis_labels("false-positive rate 0", "1"))


def _legend(real: str, model: str) -> str:
    x = WIDTH - PAD - 80
    return (
        f'<text x="{x}" y="18" font-size="9" fill="{REAL}">{real}</text>'
        f'<text x="{x + 30}" y="18" font-size="9" fill="{MODEL}">{model}</text>'
    )


def _x(fraction: float) -> float:
    return PAD + fraction * (WIDTH - 2 * PAD)


def _y(fraction: float) -> float:
    return HEIGHT - PAD - fraction * (HEIGHT - 2 * PAD)


def _polyline(points, colour: str) -> str:
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return f'<polyline points="{text}" fill="none" stroke="{colour}" stroke-width="1.5"/>'


def _axis_labels(left: str, right: str) -> str:
    return (
        f'<text x="{PAD}" y="{HEIGHT - PAD + 14}" font-size="9">{escape(left)}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 14}" font-size="9" '
        f'text-anchor="end">{escape(right)}</text>'
    )


def _frame(title: str, body: str, width: int = WIDTH) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        f'viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="{PAD}" y="18" font-size="11">{escape(title)}</text>{body}</svg>'
    )
