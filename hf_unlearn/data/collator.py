"""Tokenising prompt/answer rows into training sequences, and padding paired forget/retain batches."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..losses import IGNORE_INDEX

logger = logging.getLogger(__name__)


def tokenize_row(
    tokenizer, prompt: str, answer: str, max_length: int | None = None, loss_on_prompt: bool = False
) -> tuple[dict[str, list[int]], bool]:
    """Tokenise one row as `prompt tokens + answer tokens + EOS`; labels cover the answer and EOS only.

    The prompt is tokenised on its own, exactly as evaluation tokenises the raw `input` before generating, so the
    answer tokens trained on are the tokens the model would generate. Returns the features and whether the row had
    to be truncated: answer tokens are kept first (they are what is unlearned), then the end of the prompt.
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = max_length is not None and len(prompt_ids) + len(answer_ids) > max_length
    if truncated:
        answer_ids = answer_ids[:max_length]
        keep = max_length - len(answer_ids)
        prompt_ids = prompt_ids[len(prompt_ids) - keep :] if keep > 0 else []
    input_ids = prompt_ids + answer_ids
    labels = list(input_ids) if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return {"input_ids": input_ids, "labels": labels}, truncated


def tokenize_dataset(dataset, tokenizer, name: str, max_length: int, loss_on_prompt: bool = False) -> list[dict]:
    """Tokenise every row of a dataset with `input`/`output` columns; warn (with row indices only) on truncation."""
    features, truncated = [], []
    for index, (prompt, answer) in enumerate(zip(dataset["input"], dataset["output"])):
        row, cut = tokenize_row(tokenizer, prompt, answer, max_length, loss_on_prompt)
        features.append(row)
        if cut:
            truncated.append(index)
    if truncated:
        shown = ", ".join(map(str, truncated[:10])) + (" ..." if len(truncated) > 10 else "")
        logger.warning(
            "%s: %d row(s) longer than max_length=%d tokens were truncated (answer tokens kept first): rows %s. "
            "Raise max_length to train on them whole.",
            name,
            len(truncated),
            max_length,
            shown,
        )
    return features


def tokenize_document(tokenizer, text: str, max_length: int | None = None) -> list[dict[str, list[int]]]:
    """A whole text as a membership-inference attack scores it (`tokenizer(text)`, no EOS added), every token
    carrying loss; a text longer than `max_length` tokens becomes consecutive windows of at most that length (a last
    window of one token, which predicts nothing, is dropped)."""
    ids = tokenizer(text)["input_ids"]
    step = max_length or len(ids) or 1
    windows = [ids[i : i + step] for i in range(0, len(ids), step)]
    return [{"input_ids": w, "labels": list(w)} for w in windows if len(w) >= 2]


def tokenize_documents(texts, tokenizer, name: str, max_length: int, groups: list[int] | None = None) -> list[dict]:
    """`tokenize_document` over `texts`; refuses a text with fewer than 2 tokens (by number, never quoting it) and
    says how many were cut into windows. With `groups`, each feature (each window) carries its text's `group`."""
    features, windowed = [], 0
    for number, text in enumerate(texts, start=1):
        rows = tokenize_document(tokenizer, text, max_length)
        if groups is not None:
            rows = [{**row, "group": groups[number - 1]} for row in rows]
        if not rows:
            raise ValueError(f"{name}: document {number} has fewer than 2 tokens, so no token can be scored.")
        windowed += len(rows) > 1
        features += rows
    if windowed:
        logger.warning("%s: %d document(s) longer than max_length=%d tokens were cut into windows of that length.",
                       name, windowed, max_length)
    return features


def pad(sequences: list[list[Any]], value: Any, dtype=torch.long, side: str = "right") -> torch.Tensor:
    """Pad a list of lists into a `(batch, longest)` tensor, on the right (training, scoring) or on the left
    (batched generation, whose new tokens must start at the same column in every row). The one padding routine."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}.")
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=dtype)
    for i, s in enumerate(sequences):
        if s:
            target = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
            out[i, target] = torch.tensor(s, dtype=dtype)
    return out


def pad_ids(rows: list[list[int]], pad_token_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """`(input_ids, attention_mask)` of token-id rows padded on `side`."""
    return pad(rows, pad_token_id, side=side), pad([[1] * len(r) for r in rows], 0, side=side)


def pad_features(rows: list[dict], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded `(input_ids, attention_mask, labels)` of tokenised rows (`tokenize_row`'s features)."""
    return (*pad_ids([r["input_ids"] for r in rows], pad_token_id), pad([r["labels"] for r in rows], IGNORE_INDEX))


class UnlearningCollator:
    """Pads `{"forget": row, "retain": row}` items into `forget_*` and `retain_*` tensors (right padding).

    Right padding keeps rotary positions equal to unpadded positions without explicit `position_ids`. The keys are
    prefixed rather than named `labels`, so no part of `Trainer` mistakes them for a standard LM loss.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, dict]]) -> dict[str, torch.Tensor]:
        batch = {}
        for part in ("forget", "retain"):
            rows = []
            for item in items:  # an item's retain part may be a list of rows (`retain_per_forget` > 1)
                value = item.get(part)
                rows += value if isinstance(value, list) else [value] if value is not None else []
            if not rows:
                continue
            (batch[f"{part}_input_ids"], batch[f"{part}_attention_mask"],
             batch[f"{part}_labels"]) = pad_features(rows, self.pad_token_id)
            if "group" in rows[0]:  # whole documents of a kind (method "anchored" reads each kind's unseen level)
                batch[f"{part}_group"] = torch.tensor([r["group"] for r in rows])
            if "ref_logp" in rows[0]:
                ref = [r["ref_logp"] for r in rows]
                if isinstance(ref[0], list):  # token level: aligned with the shifted labels
                    batch[f"{part}_ref_logp"] = pad(ref, 0.0, dtype=torch.float32)
                else:
                    batch[f"{part}_ref_logp"] = torch.tensor(ref, dtype=torch.float32)
        return batch
