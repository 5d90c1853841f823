"""All membership-inference attacks on one member / non-member split, from a single batched pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_unlearn.metrics.mia.auc import membership_auc, mia_score
from hf_unlearn.metrics.mia.exposure import exposed_share
from hf_unlearn.metrics.mia.loss import loss_scores
from hf_unlearn.metrics.mia.min_k import DEFAULT_K, min_k_scores
from hf_unlearn.metrics.mia.min_k_plus_plus import min_k_plus_plus_scores
from hf_unlearn.metrics.mia.token_stats import DEFAULT_BATCH_SIZE, DocumentTokenStats, document_token_stats
from hf_unlearn.metrics.mia.zlib import zlib_scores


def mia_scores_from_stats(
    member_stats: Sequence[DocumentTokenStats],
    nonmember_stats: Sequence[DocumentTokenStats],
    member_docs: Sequence[str],
    nonmember_docs: Sequence[str],
    k: float = DEFAULT_K,
) -> dict[str, float]:
    """Every attack's AUC and the task's MIA score from per-document token statistics (no model needed).

    Keys: `mia_loss_acc` (the task script's name for the loss attack's **AUC**, kept for compatibility),
    `mia_loss_auc` (the same value under an accurate name), `mia_final_score` (`1 - 2|AUC - 0.5|`, the task's MIA
    score), `mia_zlib_auc`, `mia_min_k_auc`, `mia_min_k_plus_plus_auc` (`k` is the Min-K fraction, 0.2 = 20%),
    `mia_exposed_share` (members whose loss is below the nonmembers' 5th percentile, `exposure.exposed_share`) and the
    mean losses `mia_member_loss`, `mia_nonmember_loss`. The documents' texts are needed by the zlib attack only.
    """
    member_losses, nonmember_losses = [s.loss for s in member_stats], [s.loss for s in nonmember_stats]
    loss_auc = membership_auc(loss_scores(member_stats), loss_scores(nonmember_stats))
    return {
        "mia_loss_acc": loss_auc,
        "mia_loss_auc": loss_auc,
        "mia_final_score": mia_score(loss_auc),
        "mia_zlib_auc": membership_auc(
            zlib_scores(member_stats, member_docs), zlib_scores(nonmember_stats, nonmember_docs)
        ),
        "mia_min_k_auc": membership_auc(min_k_scores(member_stats, k), min_k_scores(nonmember_stats, k)),
        "mia_min_k_plus_plus_auc": membership_auc(
            min_k_plus_plus_scores(member_stats, k), min_k_plus_plus_scores(nonmember_stats, k)
        ),
        "mia_exposed_share": exposed_share(member_losses, nonmember_losses),
        "mia_member_loss": float(np.mean(member_losses)),
        "mia_nonmember_loss": float(np.mean(nonmember_losses)),
    }


def score_mia(
    model: torch.nn.Module,
    tokenizer: Any,
    member_docs: Sequence[str],
    nonmember_docs: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    k: float = DEFAULT_K,
    return_losses: bool = False,
) -> dict[str, Any]:
    """The attacks' AUCs and the task's MIA score (see `mia_scores_from_stats`), from one batched pass.

    With `return_losses=True` the result also holds `member_losses` and `nonmember_losses` (mean token NLL per
    document, in input order).
    """
    member_docs, nonmember_docs = list(member_docs), list(nonmember_docs)
    stats = document_token_stats(model, tokenizer, member_docs + nonmember_docs, batch_size=batch_size)
    members, nonmembers = stats[: len(member_docs)], stats[len(member_docs) :]
    result: dict[str, Any] = mia_scores_from_stats(members, nonmembers, member_docs, nonmember_docs, k)
    if return_losses:
        result["member_losses"] = [s.loss for s in members]
        result["nonmember_losses"] = [s.loss for s in nonmembers]
    return result
