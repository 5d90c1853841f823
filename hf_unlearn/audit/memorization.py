"""Teacher-forced memorization metrics of the answers: exact memorization (EM) and extraction strength (ES).

Both read the model's argmax predictions over the answer tokens when the prompt and the true answer so far are
given (one forward pass per row, no generation), as open-unlearning reports them:

- EM = the fraction of answer tokens predicted exactly;
- ES = 1 - k*/L, with L the answer's length and k* the shortest prefix of the answer after which every remaining
  token is predicted exactly: how little of the answer an attacker must already know to extract the rest
  (1: none of it; 0: all of it).

The answer tokens are those trained on, without the EOS (see `hf_unlearn.data.collator.tokenize_row`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..data.collator import pad_features, tokenize_row
from ..losses import IGNORE_INDEX
from ..metrics._model_state import evaluation_mode, model_device


def exact_memorization(predicted: Sequence[int], answer: Sequence[int]) -> float:
    """Fraction of positions where the teacher-forced prediction equals the answer token."""
    if not answer:
        raise ValueError("exact_memorization needs a non-empty answer")
    return sum(int(p == a) for p, a in zip(predicted, answer)) / len(answer)


def extraction_strength(predicted: Sequence[int], answer: Sequence[int]) -> float:
    """1 - k*/L, k* the shortest prefix after which the rest of the answer is predicted exactly."""
    if not answer:
        raise ValueError("extraction_strength needs a non-empty answer")
    k = len(answer)
    while k > 0 and predicted[k - 1] == answer[k - 1]:
        k -= 1
    return 1.0 - k / len(answer)


@torch.no_grad()
def teacher_forced_predictions(
    model, tokenizer, rows: Sequence[Mapping], batch_size: int = 8, max_length: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """(predicted, answer) token lists of each row's answer (EOS excluded), teacher-forced, in row order."""
    device = model_device(model)
    out: list[tuple[list[int], list[int]]] = []
    features = []
    for row in rows:
        feature, _ = tokenize_row(tokenizer, row["input"], row["output"], max_length)
        feature["labels"] = feature["labels"][:-1] + [IGNORE_INDEX]  # the EOS is not part of the answer text
        features.append(feature)
    with evaluation_mode(model):
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            ids, mask, labels = (t.to(device) for t in pad_features(chunk, tokenizer.pad_token_id or 0))
            logits = model(input_ids=ids, attention_mask=mask).logits
            predicted = logits[:, :-1].argmax(dim=-1)  # position t predicts token t + 1
            target = labels[:, 1:]
            for i in range(len(chunk)):
                keep = target[i] != IGNORE_INDEX
                out.append((predicted[i][keep].tolist(), target[i][keep].tolist()))
    return out


def row_memorization(model, tokenizer, rows: Sequence[Mapping], batch_size: int = 8,
                     max_length: int | None = None) -> list[dict[str, float] | None]:
    """`{"exact_memorization", "extraction_strength"}` of each row, in order (None for an empty answer)."""
    return [{"exact_memorization": exact_memorization(p, a), "extraction_strength": extraction_strength(p, a)}
            if a else None for p, a in teacher_forced_predictions(model, tokenizer, rows, batch_size, max_length)]


def mean_memorization(per_row: Sequence[Mapping[str, float] | None]) -> dict[str, float]:
    """Mean EM and ES over the rows with a non-empty answer."""
    scored = [r for r in per_row if r is not None]
    if not scored:
        raise ValueError("no row has answer tokens")
    return {name: sum(r[name] for r in scored) / len(scored) for name in ("exact_memorization", "extraction_strength")}


def memorization_scores(model, tokenizer, rows: Sequence[Mapping], batch_size: int = 8,
                        max_length: int | None = None) -> dict[str, float]:
    """Mean EM and ES over the rows with a non-empty answer: `{"exact_memorization", "extraction_strength"}`."""
    return mean_memorization(row_memorization(model, tokenizer, rows, batch_size, max_length))
