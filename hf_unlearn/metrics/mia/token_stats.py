"""One forward pass per batch of documents, giving every membership-inference attack what it needs.

For each document (tokenised whole, as the task does: no truncation) and each predicted position t >= 1 it keeps
the log-probability of the actual token, and the mean and standard deviation of the log-probabilities under the
model's own next-token distribution at that position (what Min-K%++ normalises by). The loss attack, zlib, Min-K%
and Min-K%++ all read these, so the model runs once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hf_unlearn.data.collator import pad_ids
from hf_unlearn.metrics._model_state import evaluation_mode, model_device

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class DocumentTokenStats:
    """Per-token statistics of one document (arrays of length `n_tokens - 1`, float64).

    Attributes:
        log_probs: log p(x_t | x_<t) of each actual token after the first.
        mean_log_probs: E_{z ~ p(.|x_<t)}[log p(z | x_<t)] (minus the entropy) at each position.
        std_log_probs: the standard deviation of log p(z | x_<t) under the same distribution.
    """

    log_probs: np.ndarray
    mean_log_probs: np.ndarray
    std_log_probs: np.ndarray

    @property
    def loss(self) -> float:
        """Mean token negative log-likelihood: what `model(ids, labels=ids).loss` returns for the document."""
        return float(-self.log_probs.mean())


def _row_stats(logits: torch.Tensor, ids: torch.Tensor) -> DocumentTokenStats:
    """Statistics of one unpadded row: `logits` (n, vocab) predict `ids[1:]`."""
    # float32 like transformers' own loss (it upcasts logits before the cross-entropy).
    log_p = torch.log_softmax(logits[:-1].float(), dim=-1)
    token_log_p = log_p.gather(-1, ids[1:, None]).squeeze(-1)
    p = log_p.exp()
    mean = (p * log_p).sum(-1)
    second = (p * log_p.square()).sum(-1)
    std = (second - mean.square()).clamp_min(0).sqrt()
    as_np = lambda t: t.double().cpu().numpy()  # noqa: E731
    return DocumentTokenStats(as_np(token_log_p), as_np(mean), as_np(std))


def _encode(tokenizer: Any, documents: Sequence[str]) -> list[list[int]]:
    encoded = [tokenizer(doc)["input_ids"] for doc in documents]
    short = [i for i, ids in enumerate(encoded) if len(ids) < 2]
    if short:
        raise ValueError(f"documents {short[:5]} have fewer than 2 tokens: no token to score")
    return encoded


def document_token_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    documents: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[DocumentTokenStats]:
    """Per-token statistics of each whole document, batched with right padding and an attention mask.

    Right padding keeps every real token at its unpadded position, so the statistics match a one-document pass up
    to float rounding. Documents are sorted by length to cut padding; results come back in input order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = _encode(tokenizer, documents)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    stats: list[DocumentTokenStats | None] = [None] * len(encoded)
    with evaluation_mode(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = pad_ids([encoded[i] for i in rows], pad_id)
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            for j, i in enumerate(rows):
                n = len(encoded[i])
                stats[i] = _row_stats(logits[j, :n], input_ids[j, :n])
    return stats  # type: ignore[return-value]


def document_losses_one_at_a_time(model: torch.nn.Module, tokenizer: Any, documents: Sequence[str]) -> list[float]:
    """The task's own MIA pass (the reference): `model(ids, labels=ids).loss` for each whole document."""
    device = model_device(model)
    losses = []
    with evaluation_mode(model):
        for doc in documents:
            ids = tokenizer(doc, return_tensors="pt").input_ids.to(device)
            losses.append(float(model(ids, labels=ids).loss))
    return losses
