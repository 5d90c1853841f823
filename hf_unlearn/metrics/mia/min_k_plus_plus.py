"""Min-K%++ (Zhang et al. 2024): Min-K% on token log-probabilities standardised by the model's own distribution.

At position t the score of the actual token is `(log p(x_t) - mu_t) / sigma_t`, with `mu_t` and `sigma_t` the mean
and standard deviation of `log p(z)` for z drawn from the model's next-token distribution there. Training makes
the seen tokens local maxima of the likelihood, so they stand out against that distribution; the document score
is the mean of its k% lowest standardised values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_unlearn.metrics.mia.min_k import DEFAULT_K, lowest_k_mean
from hf_unlearn.metrics.mia.token_stats import DocumentTokenStats

# A one-hot next-token distribution has sigma = 0; the floor keeps the score finite there.
_MIN_STD = 1e-12


def standardised_log_probs(stats: DocumentTokenStats) -> np.ndarray:
    """`(log p(x_t) - mu_t) / sigma_t` for every scored token of one document."""
    return (stats.log_probs - stats.mean_log_probs) / np.maximum(stats.std_log_probs, _MIN_STD)


def min_k_plus_plus_scores(stats: Sequence[DocumentTokenStats], k: float = DEFAULT_K) -> np.ndarray:
    """Membership scores (higher = more likely a member): mean of the lowest k% standardised log-probabilities."""
    return np.array([lowest_k_mean(standardised_log_probs(s), k) for s in stats])
