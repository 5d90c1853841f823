"""Per-document exposure: how many members still stand out, which an average AUC can hide.

Hayes et al. 2024 (arXiv:2403.01218) and RULI (arXiv:2506.13009) show that a membership AUC near 0.5 can hide
individual examples that stay exposed. The share of members whose loss is below the nonmembers' 5th percentile is
the share an attacker flags at a 5% false-positive rate on unseen documents: about 5% when members look unseen.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_PERCENTILE = 5.0


def exposed_share(member_losses: Sequence[float], nonmember_losses: Sequence[float],
                  percentile: float = DEFAULT_PERCENTILE) -> float:
    """Share of members whose mean token NLL is below the nonmembers' `percentile`-th percentile (NumPy's linear
    interpolation between order statistics)."""
    members, nonmembers = np.asarray(member_losses, float), np.asarray(nonmember_losses, float)
    if not len(members) or not len(nonmembers):
        raise ValueError("exposed_share needs at least one member and one nonmember loss")
    threshold = np.percentile(nonmembers, percentile)
    return float((members < threshold).mean())
