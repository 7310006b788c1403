"""CMC and ROC figures comparing recognizers, one curve each, for the HTML evaluation report.

matplotlib is imported inside the functions so that importing the evaluate package stays cheap.
Figures are drawn on an explicit Agg canvas instead of through pyplot: pyplot keeps global state
(current figure, backend) that is not thread-safe, and Prefect runs tasks in threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Points drawn per ROC curve. Exact ROCs have one point per distinct pair score (millions with
# large galleries); more points than pixels only makes the PNG slow to render.
_ROC_PLOT_POINTS = 2000


def _curve(result: Any, name: str) -> np.ndarray:
    """Read a curve from an ``Evaluation`` or from a mapping (e.g. arrays reloaded from .npz)."""
    value = result[name] if isinstance(result, Mapping) else getattr(result, name)
    return np.asarray(value, dtype=np.float64)


def _thin_roc(far: np.ndarray, tar: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample the ROC at log-spaced FARs, keeping the upper envelope (best TAR with FAR <= x)."""
    positive = far[far > 0]
    if positive.size <= n:
        keep = far > 0
        return far[keep], tar[keep]
    grid = np.geomspace(positive[0], far[-1], n)
    idx = np.searchsorted(far, grid, side="right") - 1
    return far[idx], tar[idx]


def _figure(results: Mapping[str, Any]) -> Any:
    if not results:
        raise ValueError("nothing to plot: results is empty")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_cmc(results: Mapping[str, Any], path: str | Path, title: str = "CMC") -> Path:
    """Identification rate vs rank, one curve per recognizer name."""
    fig = _figure(results)
    ax = fig.add_subplot()
    max_rank = 1
    for name, result in results.items():
        curve = _curve(result, "cmc")
        ranks = np.arange(1, len(curve) + 1)
        max_rank = max(max_rank, len(curve))
        ax.plot(ranks, curve, marker="o", markersize=3, label=name)
    ax.set_xlim(0.5, max_rank + 0.5)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    ax.set_title(title)
    ax.grid(linestyle="--", alpha=0.5)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_roc(results: Mapping[str, Any], path: str | Path, title: str = "ROC") -> Path:
    """TAR vs FAR on a log FAR axis (the low-FAR end is what forensic search cares about).

    FAR = 0 cannot be shown on a log axis; the curve starts at the first non-zero FAR, i.e.
    the resolution 1/n_impostor, which is itself informative.
    """
    fig = _figure(results)
    ax = fig.add_subplot()
    min_far = 1.0
    for name, result in results.items():
        far, tar = _thin_roc(_curve(result, "far"), _curve(result, "tar"), _ROC_PLOT_POINTS)
        if far.size:
            min_far = min(min_far, float(far[0]))
        ax.step(far, tar, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlim(min(min_far, 1e-3), 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("False accept rate")
    ax.set_ylabel("True accept rate")
    ax.set_title(title)
    ax.grid(which="both", linestyle="--", alpha=0.4)
    ax.legend(loc="lower right")
    return _save(fig, path)
