"""The reference-model attack (Carlini et al. 2021, "Extracting Training Data from Large Language Models"): a document
the model saw is likelier under it than under a model that saw neither set, so the score is
`NLL_reference(d) - NLL_model(d)`, with the model from before fine-tuning as the reference. It tells membership
from the document's own difficulty, which the plain loss attack confounds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_unlearn.metrics.mia.token_stats import DocumentTokenStats


def reference_scores(stats: Sequence[DocumentTokenStats], reference_stats: Sequence[DocumentTokenStats]) -> np.ndarray:
    """Membership scores (higher = more likely a member): the reference model's mean token NLL of each document minus
    the model's (the same documents, in the same order)."""
    if len(stats) != len(reference_stats):
        raise ValueError(f"{len(stats)} documents scored by the model but {len(reference_stats)} by the reference")
    return np.array([r.loss - s.loss for s, r in zip(stats, reference_stats)])
