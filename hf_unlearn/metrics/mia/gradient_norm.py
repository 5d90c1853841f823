"""The gradient-norm attack: a document the model was trained on sits near a minimum of its loss, so the gradient of
that loss with respect to the weights is smaller for members; the score is `-||grad_theta NLL(d)||_2` over every
parameter (one backward pass per document; the model's weights and `requires_grad` flags are left as they were).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_unlearn.metrics._model_state import model_device


def gradient_norms(model: torch.nn.Module, tokenizer: Any, documents: Sequence[str]) -> list[float]:
    """`||grad_theta NLL(d)||_2` of each document (its mean token NLL, as the loss attack scores it), over all
    parameters of `model` (a peft model's adapter weights and frozen base alike)."""
    device = model_device(model)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    norms, was_training = [], model.training
    model.eval()  # no dropout: the gradient of the loss the attack scores
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for document in documents:
                ids = torch.tensor([tokenizer(document)["input_ids"]], device=device)
                if ids.shape[1] < 2:
                    raise ValueError("a document of fewer than 2 tokens has no loss")
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss.float()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                squared = sum(g.float().square().sum() for g in grads if g is not None)
                norms.append(float(torch.as_tensor(squared).sqrt()))
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return norms


def gradient_norm_scores(norms: Sequence[float]) -> np.ndarray:
    """Membership scores (higher = more likely a member): minus each document's gradient norm."""
    return -np.asarray(norms, dtype=float)
