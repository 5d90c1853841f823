"""Min-K% Prob (Shi et al. 2024): the mean log-probability of the document's k% least likely tokens.

A text the model saw rarely holds very unlikely tokens, so its lowest log-probabilities are not so low.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_unlearn.metrics.mia.token_stats import DocumentTokenStats

DEFAULT_K = 0.2


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the `max(1, int(len * k))` smallest values (at least one, so short texts still get a score)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    count = max(1, int(len(values) * k))
    return float(np.sort(values)[:count].mean())


def min_k_scores(stats: Sequence[DocumentTokenStats], k: float = DEFAULT_K) -> np.ndarray:
    """Membership scores (higher = more likely a member): mean of the lowest k% token log-probabilities."""
    return np.array([lowest_k_mean(s.log_probs, k) for s in stats])
