"""The task's loss attack (Yeom et al. 2018): a document the model saw has a lower loss.

The score is `-loss`, where the loss is the mean token NLL of the whole document (`model(ids, labels=ids).loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_unlearn.metrics.mia.token_stats import DocumentTokenStats


def loss_scores(stats: Sequence[DocumentTokenStats]) -> np.ndarray:
    """Membership scores (higher = more likely a member): minus each document's mean token NLL."""
    return np.array([-s.loss for s in stats])
