"""The zlib attack (Carlini et al. 2021): the loss relative to how compressible the text is.

Repetitive text has a low loss whether or not the model saw it; dividing by the zlib entropy (the length in bytes
of the zlib-compressed UTF-8 text) discounts that. Score = `-loss / zlib_entropy`.
"""

from __future__ import annotations

import zlib as _zlib
from collections.abc import Sequence

import numpy as np

from hf_unlearn.metrics.mia.token_stats import DocumentTokenStats


def zlib_entropy(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text."""
    return len(_zlib.compress(text.encode("utf-8")))


def zlib_scores(stats: Sequence[DocumentTokenStats], documents: Sequence[str]) -> np.ndarray:
    """Membership scores (higher = more likely a member): `-loss / zlib_entropy(document)`."""
    if len(stats) != len(documents):
        raise ValueError(f"{len(stats)} token statistics but {len(documents)} documents")
    return np.array([-s.loss / zlib_entropy(doc) for s, doc in zip(stats, documents)])
