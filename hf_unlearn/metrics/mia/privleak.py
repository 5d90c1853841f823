"""MUSE's PrivLeak (Shi et al. 2024, arXiv:2407.06460): how far the unlearned model's membership AUC is from that of a
*retain model* (trained without the forget set), relative to it, in percent.

MUSE reports its AUC the other way round from ours (`1 - AUC` here: ours is high when the forget documents look like
members), so that a model that still remembers them gets a PrivLeak near -100 and a model that pushed them far past
unseen ones a large positive value; open-unlearning turns its AUCs around the same way to reproduce MUSE. This
function takes our AUCs and returns MUSE's number: `((1 - AUC_unlearned) - (1 - AUC_retain)) / (1 - AUC_retain) *
100`. 0 is ideal; negative: under-unlearned (the forget documents still stand out as members); positive: over-
unlearned (they stand out as *less* likely than unseen ones).
"""

from __future__ import annotations


def privleak(auc_unlearned: float, auc_retain: float) -> float:
    """PrivLeak in percent, MUSE's sign convention (see the module docstring), from two membership AUCs in ours
    (members vs the same holdout documents; MUSE uses Min-K% with k = 0.4)."""
    for name, value in (("auc_unlearned", auc_unlearned), ("auc_retain", auc_retain)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if auc_retain >= 1.0:
        raise ValueError("auc_retain is 1: a retain model that tells the documents apart perfectly is no reference")
    return ((1.0 - auc_unlearned) - (1.0 - auc_retain)) / (1.0 - auc_retain) * 100.0
