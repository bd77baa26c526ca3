"""Confidence intervals for the numbers medmeta reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean with the half-width of its confidence interval."""

    mean: float
    ci: float
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci:.2g}"

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci": self.ci, "confidence": self.confidence, "n": self.n}


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence half-width (the few-shot literature's usual report)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values")
    if len(x) == 1:
        return Estimate(float(x[0]), float("nan"), 1, confidence)
    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return Estimate(float(x.mean()), float(half), len(x), confidence)


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: a percentile bootstrap over rows shared by ``arrays`` (e.g. patients)."""
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    point = float(statistic(*arrays))
    draws = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, n, n)
        draws[i] = statistic(*(a[idx] for a in arrays))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return point, float(low), float(high)


def conformal_bounds(residual: np.ndarray, coverage: float) -> list[float]:
    """Split-conformal ``[low, high]`` bounds on residuals (actual - predicted): each tail holds at most
    ``(1 - coverage) / 2`` of the calibration residuals, with the finite-sample correction."""
    residual = np.asarray(residual, dtype=float)
    n = len(residual)
    tail = (1 - coverage) / 2
    lo = np.quantile(residual, max(0.0, np.floor(tail * (n + 1)) / n), method="lower")
    hi = np.quantile(residual, min(1.0, np.ceil((1 - tail) * (n + 1)) / n), method="higher")
    return [float(lo), float(hi)]
