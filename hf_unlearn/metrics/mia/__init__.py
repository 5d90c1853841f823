"""Membership-inference attacks: the task's loss attack, zlib, Min-K% and Min-K%++, the reference-model and the
gradient-norm attacks, one module each; per-document exposure and MUSE's PrivLeak beside them."""

from hf_unlearn.metrics.mia.auc import membership_auc, mia_score
from hf_unlearn.metrics.mia.exposure import exposed_share
from hf_unlearn.metrics.mia.gradient_norm import gradient_norm_scores, gradient_norms
from hf_unlearn.metrics.mia.loss import loss_scores
from hf_unlearn.metrics.mia.min_k import min_k_scores
from hf_unlearn.metrics.mia.min_k_plus_plus import min_k_plus_plus_scores, standardised_log_probs
from hf_unlearn.metrics.mia.privleak import privleak
from hf_unlearn.metrics.mia.reference import reference_scores
from hf_unlearn.metrics.mia.score import mia_scores_from_stats, score_mia
from hf_unlearn.metrics.mia.token_stats import (
    DocumentTokenStats,
    document_losses_one_at_a_time,
    document_token_stats,
)
from hf_unlearn.metrics.mia.zlib import zlib_entropy, zlib_scores

__all__ = [
    "DocumentTokenStats",
    "document_losses_one_at_a_time",
    "document_token_stats",
    "exposed_share",
    "gradient_norm_scores",
    "gradient_norms",
    "loss_scores",
    "membership_auc",
    "mia_score",
    "mia_scores_from_stats",
    "min_k_plus_plus_scores",
    "min_k_scores",
    "privleak",
    "reference_scores",
    "score_mia",
    "standardised_log_probs",
    "zlib_entropy",
    "zlib_scores",
]
