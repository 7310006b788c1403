"""Histograms as inline SVG: the report must open offline, with no script and no plotting stack.

matplotlib would do, but its import costs seconds and its PNGs are heavier than a few dozen
``<rect>`` elements; reviewers need bars and a threshold line, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 360, 170
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 34, 10, 22, 30


def histogram_svg(values: Sequence[float], title: str, *,
                  thresholds: Sequence[tuple[float, str]] = (), bins: int = 30,
                  bounds: tuple[float, float] | None = None) -> str:
    """An SVG histogram of ``values`` with a dashed red line per threshold (value, label)."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    marks = [t for t, _ in thresholds]
    if bounds is None:
        points = np.concatenate([data, marks]) if len(data) or marks else np.zeros(1)
        lo, hi = float(points.min()), float(points.max())
    else:
        lo, hi = bounds
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(data, lo, hi), bins=bins, range=(lo, hi))
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    top = max(int(counts.max()) if len(counts) else 0, 1)

    def x(value: float) -> float:
        return PAD_LEFT + (value - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<text x="{PAD_LEFT}" y="14" class="t">{escape(title)} (n={len(data)})</text>',
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{WIDTH - PAD_RIGHT}" '
             f'y2="{PAD_TOP + plot_h}" class="axis"/>']
    for count, left, right in zip(counts, edges[:-1], edges[1:], strict=True):
        if count:
            h = count / top * plot_h
            parts.append(f'<rect x="{x(left):.1f}" y="{PAD_TOP + plot_h - h:.1f}" '
                         f'width="{max(x(right) - x(left) - 1, 1):.1f}" height="{h:.1f}" '
                         f'class="bar"><title>{left:.3g} to {right:.3g}: {count}</title></rect>')
    for value, label in thresholds:
        if lo <= value <= hi:
            # Labels near the right edge go on the line's left, or they are clipped.
            right = x(value) > WIDTH - PAD_RIGHT - 40
            anchor = ' text-anchor="end"' if right else ""
            parts.append(f'<line x1="{x(value):.1f}" y1="{PAD_TOP}" x2="{x(value):.1f}" '
                         f'y2="{PAD_TOP + plot_h}" class="thr"/>'
                         f'<text x="{x(value) + (-3 if right else 3):.1f}" y="{PAD_TOP + 10}" '
                         f'class="tl"{anchor}>{escape(label)}</text>')
    parts += [f'<text x="{PAD_LEFT}" y="{HEIGHT - 10}" class="a">{lo:.3g}</text>',
              f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 10}" class="a" '
              f'text-anchor="end">{hi:.3g}</text>',
              f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" class="a" text-anchor="end">'
              f'{top}</text>', "</svg>"]
    return "".join(parts)
