"""The calibration documents' NLL under the current model: the unseen level that method `"anchored"` aims at.

Calibration documents are texts the model never saw, of the same kind as the forget documents. At the start of
training every one is measured (mean token NLL over all its tokens, as the loss attack scores a document); then, at
each optimisation step, the next `batch` of them in a fixed cycle is measured again under the current model: in the
step's own policy pass, with gradient, when the method holds them at their starting level (`Needs.calibration_grad`),
else in a no-grad pass of their own (`refresh`). The table of latest values is what the method's loss reads: a running estimate that follows the
model (unlearning lifts the unseen level too) for the cost of a forward pass over `batch` documents a step.

Every process measures the same documents, so the table is the same everywhere and ZeRO-3's parameter gathers stay
in step. The table is part of the checkpoint (`CalibrationLevels` is an `ExportableState` callback saved in
`trainer_state.json`), so a resumed run reads exactly what the uninterrupted one would.
"""

from __future__ import annotations

import json
import os

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .data.collator import pad_features
from .losses import lowest_k_mean, mean_token_nll, standardised_log_probs, token_log_probs


def floored_min_k_score(logits: torch.Tensor, labels: torch.Tensor, k: float, floor: float | None) -> torch.Tensor:
    """Each row's Min-K%++ score: the mean of its k lowest standardised token log-probs, each at least `-floor`
    when a floor is given."""
    z, z_mask = standardised_log_probs(logits, labels)
    return lowest_k_mean(z if floor is None else z.clamp(min=-floor), z_mask, k)


@torch.no_grad()
def documents_scores(model, features: list[dict], pad_token_id: int, batch_size: int = 8,
                     k: float | None = None, floor: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean token NLL of each tokenised document (`tokenize_documents` features), `(n,)` float32 in input order, and
    with `k` each one's Min-K%++ score (mean of its k lowest standardised token log-probs, each at least `-floor`
    when a floor is given) from the same pass."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    values, scores = [], []
    try:
        for start in range(0, len(features), batch_size):
            ids, mask, labels = pad_features(features[start : start + batch_size], pad_token_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            logp, tok_mask = token_log_probs(logits, labels.to(device))
            values.append(mean_token_nll(logp.float(), tok_mask.float()).cpu())
            if k is not None:
                scores.append(floored_min_k_score(logits, labels.to(device), k, floor).float().cpu())
    finally:
        model.train(was_training)
    nll = torch.cat(values) if values else torch.zeros(0)
    if k is None:
        return nll, None
    return nll, torch.cat(scores) if scores else torch.zeros(0)


def documents_nll(model, features: list[dict], pad_token_id: int, batch_size: int = 8) -> torch.Tensor:
    """Mean token NLL of each tokenised document (`tokenize_documents` features), `(n,)` float32, in input order."""
    return documents_scores(model, features, pad_token_id, batch_size)[0]


def same_kind(values: torch.Tensor, groups: torch.Tensor | None, group: int | None) -> torch.Tensor:
    """The calibration documents' `values` (one each) of the documents of kind `group` (at least 2 of them), else all
    of them (also where kinds are not known)."""
    if groups is None or group is None:
        return values
    mine = values[groups.to(values.device) == group]
    return mine if len(mine) >= 2 else values


def cycle_indices(step: int, batch: int, count: int) -> list[int]:
    """The calibration documents measured at optimisation step `step`: the next `batch` in a fixed cycle."""
    batch = min(batch, count)
    return [(step * batch + j) % count for j in range(batch)]


class CalibrationLevels(TrainerCallback, ExportableState):
    """Latest NLL of every calibration document (see the module docstring); the trainer updates it each step."""

    def __init__(self, features: list[dict], batch: int, min_k: float | None = None, min_k_floor: float | None = None):
        self.features = features
        self.batch = batch
        self.min_k = min_k  # with a fraction: also each document's Min-K%++ score at the start (and before fine-tuning)
        self.min_k_floor = min_k_floor
        # each document's kind (`rows_to_units`), or None when the calibration set names none
        self.groups = torch.tensor([f["group"] for f in features]) if features and "group" in features[0] else None
        self.values: torch.Tensor | None = None  # the latest NLL of each document
        self.start: torch.Tensor | None = None  # each document's NLL when training started (the model before it)
        # each document's NLL under the model from before fine-tuning, where a method compares with it
        self.pre: torch.Tensor | None = None
        self.start_min_k: torch.Tensor | None = None  # each document's Min-K%++ score when training started
        self.values_min_k: torch.Tensor | None = None  # and its latest one, re-measured with the NLL
        self.pre_min_k: torch.Tensor | None = None  # and under the model from before fine-tuning

    def state(self) -> dict:
        as_list = lambda t: None if t is None else t.tolist()  # noqa: E731
        return {"args": {}, "attributes": {"values": as_list(self.values), "start": as_list(self.start),
                                           "pre": as_list(self.pre), "start_min_k": as_list(self.start_min_k),
                                           "values_min_k": as_list(self.values_min_k),
                                           "pre_min_k": as_list(self.pre_min_k)}}

    def measure_all(self, model, pad_token_id: int, pre_model=None) -> None:
        k, floor = self.min_k, self.min_k_floor
        self.values, self.start_min_k = documents_scores(model, self.features, pad_token_id, k=k, floor=floor)
        self.start = self.values.clone()
        self.values_min_k = None if self.start_min_k is None else self.start_min_k.clone()
        if pre_model is not None:
            self.pre, self.pre_min_k = documents_scores(pre_model, self.features, pad_token_id, k=k, floor=floor)

    def indices(self, step: int) -> list[int]:
        return cycle_indices(step, self.batch, len(self.features))

    def refresh(self, model, pad_token_id: int, step: int) -> None:
        """Measure this step's batch of the cycle again under `model`."""
        indices = self.indices(step)
        fresh, fresh_min_k = documents_scores(model, [self.features[i] for i in indices], pad_token_id,
                                              k=self.min_k, floor=self.min_k_floor)
        self.values[indices] = fresh
        if fresh_min_k is not None:
            self.values_min_k[indices] = fresh_min_k

    def load_from_checkpoint(self, folder: str) -> bool:
        """Take the table saved with the checkpoint in `folder`; False if it holds none (then it is measured anew)."""
        path = os.path.join(folder, "trainer_state.json")
        if not os.path.isfile(path):
            return False
        with open(path) as f:
            saved = json.load(f).get("stateful_callbacks", {}).get(type(self).__name__)
        attributes = (saved or {}).get("attributes", {})
        values, start = attributes.get("values"), attributes.get("start")
        if values is None or start is None or len(values) != len(self.features):
            return False
        self.values = torch.tensor(values, dtype=torch.float32)
        self.start = torch.tensor(start, dtype=torch.float32)
        tensor = lambda name: None if attributes.get(name) is None else torch.tensor(attributes[name],  # noqa: E731
                                                                                       dtype=torch.float32)
        self.pre, self.start_min_k, self.pre_min_k = tensor("pre"), tensor("start_min_k"), tensor("pre_min_k")
        self.values_min_k = tensor("values_min_k")
        if self.min_k is not None and (self.start_min_k is None or self.values_min_k is None):
            return False  # saved before the scores were kept: measure anew
        return True
