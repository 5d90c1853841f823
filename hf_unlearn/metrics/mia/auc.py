"""From attack scores to the numbers the task reports: ROC AUC and the MIA score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def membership_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of telling members (label 1) from non-members (label 0); a higher score must mean "member".

    Computed as the task's script does: `sklearn.metrics.roc_curve` then `auc`.
    """
    from sklearn.metrics import auc, roc_curve

    scores = np.concatenate([np.asarray(member_scores, float), np.asarray(nonmember_scores, float)])
    if np.isnan(scores).any():
        raise ValueError("NaN attack score: the MIA AUC would be meaningless")
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
    return float(auc(false_positive_rate, true_positive_rate))


def mia_score(auc_value: float) -> float:
    """`1 - 2 * |AUC - 0.5|`: 1 when members and non-members look alike (AUC 0.5), 0 at AUC 0 or 1."""
    return 1.0 - 2.0 * abs(auc_value - 0.5)
