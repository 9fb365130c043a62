"""Small bar charts as inline SVG (no plotting library, nothing to load):
the per-class lift of a classification report and the distribution of the
per-row change of a table report."""

from __future__ import annotations

import numpy as np

from .page import esc

GOOD, BAD, GREY = "#2e9e4f", "#c83c3c", "#8a94a6"


def bars(labels: list[str], values: list[float], unit: str = "", title: str = "", width: int = 560) -> str:
    """Horizontal bars around zero, one per label: positive green, negative red."""
    n = len(values)
    if not n:
        return ""
    row, left, right = 18, 150, 70
    span = max(1e-12, max(abs(v) for v in values))
    plot = width - left - right
    zero = left + plot / 2
    h = row * n + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
             f'aria-label="{esc(title)}" font-size="11" font-family="sans-serif">',
             f'<line x1="{zero}" y1="4" x2="{zero}" y2="{h - 22}" stroke="{GREY}"/>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 6 + i * row
        w = abs(v) / span * plot / 2
        x = zero if v >= 0 else zero - w
        parts.append(f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{esc(lab)}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{row - 5}" '
                     f'fill="{GOOD if v > 0 else BAD if v < 0 else GREY}"/>')
        parts.append(f'<text x="{width - right + 6}" y="{y + 11}">{v:+.2f}{esc(unit)}</text>')
    parts.append(f'<text x="{zero}" y="{h - 6}" text-anchor="middle" fill="#59627a">{esc(title)}</text></svg>')
    return "".join(parts)


def histogram(values, bins: int = 30, title: str = "", width: int = 560, height: int = 170) -> str:
    """Vertical bars of the counts of ``values`` in equal-width bins; the bin
    holding zero is grey, those below green-or-red by the sign of the change
    given in ``title``'s terms (bars left of zero red, right green)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return ""
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    pad, base = 40, height - 28
    bw = (width - 2 * pad) / bins
    top = counts.max() or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{esc(title)}" font-size="11" font-family="sans-serif">']
    for k, c in enumerate(counts):
        h = c / top * (base - 10)
        mid = (edges[k] + edges[k + 1]) / 2
        fill = GREY if edges[k] <= 0 <= edges[k + 1] else GOOD if mid > 0 else BAD
        parts.append(f'<rect x="{pad + k * bw:.1f}" y="{base - h:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{fill}"><title>{edges[k]:.3g} to {edges[k + 1]:.3g}: {c}</title></rect>')
    parts.append(f'<line x1="{pad}" y1="{base}" x2="{width - pad}" y2="{base}" stroke="{GREY}"/>')
    parts.append(f'<text x="{pad}" y="{base + 13}">{lo:.3g}</text>')
    parts.append(f'<text x="{width - pad}" y="{base + 13}" text-anchor="end">{hi:.3g}</text>')
    parts.append(f'<text x="{pad - 4}" y="14" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 3}" text-anchor="middle" fill="#59627a">{esc(title)}</text>')
    return "".join(parts) + "</svg>"


__all__ = ["bars", "histogram"]
