"""The relearning attack (Hu et al. 2024, arXiv:2406.13356): fine-tune a copy of the unlearned model briefly on
part of the forget set, then measure the forget documents it did not see.

Documents, not rows, are split: the question and completion rows of one document share its facts, so seeing one
of them would not be an attack on the others. A LUME row's document is its id without the `sc<N>`/`qa<N>` suffix;
rows without such an id are documents of their own. The fine-tuning is plain full-parameter AdamW on the answer
tokens (the prompt masked, as the unlearning trained), a fixed number of steps: an attacker's small budget.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..data.collator import pad_features, tokenize_row
from ..data.documents import document_of
from ..metrics._model_state import model_device


@dataclass
class RelearnConfig:
    """Settings of the relearning attack.

    Parameters:
        fraction (`float`, *optional*, defaults to `0.5`):
            Share of the forget documents the attacker fine-tunes on; the others are measured.
        steps (`int`, *optional*, defaults to `20`):
            AdamW steps of the fine-tuning (rows are cycled through in a shuffled order).
        learning_rate (`float`, *optional*, defaults to `5e-5`):
            Constant AdamW learning rate, all parameters.
        batch_size (`int`, *optional*, defaults to `4`):
            Rows per step.
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per row at most (answer tokens kept first).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the document split and the row order.
    """

    fraction: float = field(default=0.5, metadata={"help": "Share of forget documents fine-tuned on."})
    steps: int = field(default=20, metadata={"help": "AdamW steps of the relearning fine-tune."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Constant lr of the relearning fine-tune."})
    batch_size: int = field(default=4, metadata={"help": "Rows per relearning step."})
    max_length: int = field(default=512, metadata={"help": "Tokens per row at most."})
    seed: int = field(default=0, metadata={"help": "Seed of the document split and row order."})

    def __post_init__(self):
        if not 0 < self.fraction < 1:
            raise ValueError(f"relearn fraction must be in (0, 1), got {self.fraction}")
        for name in ("steps", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"relearn {name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"relearn learning_rate must be positive, got {self.learning_rate}")


def split_document_indices(rows: Sequence[Mapping], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(seen, unseen) row indices: a seeded `fraction` of the documents (at least one, never all) and the rest."""
    documents = list(dict.fromkeys(document_of(r, i) for i, r in enumerate(rows)))
    if len(documents) < 2:
        raise ValueError(f"the relearning attack needs at least 2 forget documents, got {len(documents)}")
    count = min(len(documents) - 1, max(1, round(len(documents) * fraction)))
    seen = set(random.Random(seed).sample(documents, count))
    split = ([], [])
    for i, row in enumerate(rows):
        split[document_of(row, i) not in seen].append(i)
    return split


def split_documents(rows: Sequence[Mapping], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(seen, unseen) rows (copies) of `split_document_indices`."""
    seen, unseen = split_document_indices(rows, fraction, seed)
    return [dict(rows[i]) for i in seen], [dict(rows[i]) for i in unseen]


def relearn(model, tokenizer, rows: Sequence[Mapping], config: RelearnConfig) -> torch.nn.Module:
    """A copy of `model` fine-tuned on `rows` for `config.steps` AdamW steps; `model` itself is left unchanged."""
    attacked = copy.deepcopy(model)
    attacked.train()
    for p in attacked.parameters():
        p.requires_grad_(True)
    features = [tokenize_row(tokenizer, r["input"], r["output"], config.max_length)[0] for r in rows]
    if not features:
        raise ValueError("relearn needs at least one row")
    generator = random.Random(config.seed)
    order: list[int] = []
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=config.learning_rate)
    device = model_device(attacked)
    for _ in range(config.steps):
        batch = []
        while len(batch) < config.batch_size:
            if not order:
                order = list(range(len(features)))
                generator.shuffle(order)
            batch.append(features[order.pop()])
        ids, mask, labels = (t.to(device) for t in pad_features(batch, tokenizer.pad_token_id or 0))
        loss = attacked(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    attacked.eval()
    return attacked
