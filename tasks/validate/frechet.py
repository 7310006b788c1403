"""Fréchet distance between two feature distributions (the FID formula).

Compares generated and real sketches as Gaussians in a feature space; with no
Inception network offline, the features are whatever image encoder the workspace uses.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), stable for few samples."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) feature sets of one width, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():
        # Singular product (fewer samples than dimensions): regularise, as pytorch-fid does.
        offset = np.eye(len(cov_a)) * eps
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = root.real
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
    return max(distance, 0.0)
