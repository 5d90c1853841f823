"""Unseen documents for honest evidence: calibration documents steer training and stopping, evaluation documents are
the reported attack's, and neither is a document the model was trained on.

`split_holdout` is the rule `hf-unlearn unlearn --holdout FILE` applies when no `--calibration FILE` is given: the
documents are numbered in file order, shuffled with Python's `random.Random(seed).shuffle`, and the first half
(rounded down) becomes the calibration set, the rest the evaluation set; both are returned in file order. Documents
are compared after collapsing white space, so a copy that differs only in spacing or line breaks counts as the same.
Messages name the option and the document's number, never its text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .lume import DataValidationError

MIN_DOCUMENTS = 4  # per set: an AUC over fewer documents moves in steps of 1/16 or coarser


def normalised(text: str) -> str:
    return " ".join(text.split())


def check_unseen(documents: Sequence[str], seen: Sequence[str], option: str, seen_name: str = "forget") -> None:
    """Refuse a document of `documents` (given by `option`) that is also one of `seen` (white space aside)."""
    known = {normalised(t) for t in seen}
    for number, text in enumerate(documents, start=1):
        if normalised(text) in known:
            raise DataValidationError(
                f"{option}: document {number} is also a {seen_name} document (same text): a document the model was "
                "trained on, or that steers training, cannot stand for unseen ones. Remove it."
            )


def check_count(documents: Sequence[str], option: str, role: str, minimum: int = MIN_DOCUMENTS) -> None:
    if len(documents) < minimum:
        raise DataValidationError(
            f"{option}: {len(documents)} {role} document(s); at least {minimum} are needed for a membership AUC that "
            "means something. Add documents the model never saw, of the same kind as the forget documents."
        )


def split_holdout(documents: Sequence[str], seed: int, option: str = "--holdout",
                  minimum: int = MIN_DOCUMENTS) -> tuple[list[str], list[str]]:
    """(calibration, evaluation): the seeded halves of `documents` (see the module docstring). Refuses duplicates
    within the file and fewer than `minimum` documents in either half."""
    seen: set[str] = set()
    for number, text in enumerate(documents, start=1):
        if normalised(text) in seen:
            raise DataValidationError(f"{option}: document {number} repeats an earlier document (same text).")
        seen.add(normalised(text))
    if len(documents) < 2 * minimum:
        raise DataValidationError(
            f"{option}: {len(documents)} document(s); split into calibration and evaluation halves it needs at least "
            f"{2 * minimum} ({minimum} each). Add documents, or give the calibration documents with --calibration."
        )
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    calibration = set(order[: len(documents) // 2])
    return ([d for i, d in enumerate(documents) if i in calibration],
            [d for i, d in enumerate(documents) if i not in calibration])
