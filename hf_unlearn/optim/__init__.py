"""Optimizers that `hf_unlearn`'s trainers can pick by name, and the registry that names them.

Importing this package registers the built-in optimizers (`"sophia"`: [`SophiaG`]).
"""

from .registry import OPTIMIZER_REGISTRY, get_optimizer_cls, register_optimizer
from .sophia import (
    SophiaG,
    causal_lm_gnb_loss,
    gnb_hessian_loss,
    sample_labels_from_logits,
    unwrap_optimizer,
)

__all__ = [
    "OPTIMIZER_REGISTRY",
    "SophiaG",
    "causal_lm_gnb_loss",
    "get_optimizer_cls",
    "gnb_hessian_loss",
    "register_optimizer",
    "sample_labels_from_logits",
    "unwrap_optimizer",
]
