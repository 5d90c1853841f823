"""General ability: is the model still good at what nobody asked it to forget?

- `perplexity`: exp of the mean token NLL over every token of held-out documents (each whole, as the membership
  attack reads a document), the language-modelling side;
- `general_knowledge`: the share of questions (`question`, `answer`, e.g. TOFU's world_facts and real_authors) whose
  greedy reply contains the answer, case-insensitively, the knowledge side (a containment match, not an exact one: a
  chat model answers in a sentence);
- MMLU through lm-eval is `hf_unlearn.metrics.mmlu.evaluate_mmlu`.

`read_general_questions` reads a question file and says which line is wrong. `general_scores` puts the parts a job has
under the `general/...` keys that `hf-unlearn unlearn` and `compare` report before and after; `general_shortfalls`
says which of them fell too far (the verdict of the one and the checks of the other).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.documents import question_prompt
from .generation import generate_completions
from .mia.token_stats import document_token_stats


def perplexity(model: torch.nn.Module, tokenizer: Any, documents: Sequence[str], batch_size: int = 8) -> float:
    """exp of the mean token NLL over all tokens of `documents`, each scored whole (long documents weigh more: a
    per-token mean, as a perplexity is)."""
    if not documents:
        raise ValueError("perplexity needs at least one document")
    stats = document_token_stats(model, tokenizer, documents, batch_size=batch_size)
    total = sum(-float(s.log_probs.sum()) for s in stats)
    return math.exp(total / sum(len(s.log_probs) for s in stats))


def general_knowledge(model: torch.nn.Module, tokenizer: Any, questions: Sequence[Mapping[str, str]],
                      max_new_tokens: int = 24, batch_size: int = 32, chat_template: bool | None = None
                      ) -> dict[str, float]:
    """`general/knowledge`: the share of `questions` whose greedy reply contains the answer (case-insensitive), and
    `general/<source>` per `source` where the rows have one. Each question is asked as one user turn of the
    tokenizer's chat template (`chat_template=None`: where the tokenizer has one), else in TOFU's plain prompt
    (`Question: ...\\nAnswer: `). `max_new_tokens` bounds the reply: a short answer comes first or not at all."""
    if not questions:
        raise ValueError("general_knowledge needs at least one question")
    if chat_template is None:
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    prompts = [q["question"] if chat_template else question_prompt(q["question"]) for q in questions]
    replies = generate_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   chat_template=chat_template)
    hits = [q["answer"].strip().lower() in reply.lower() for q, reply in zip(questions, replies)]
    out = {"general/knowledge": sum(hits) / len(hits)}
    for source in sorted({q["source"] for q in questions if q.get("source")}):
        mine = [h for h, q in zip(hits, questions) if q.get("source") == source]
        out[f"general/{source}"] = sum(mine) / len(mine)
    return out


def read_general_questions(path: str | Path, option: str = "--general-questions") -> list[dict[str, str]]:
    """The rows of a JSON-lines file with non-empty string fields `question` and `answer` (and an optional
    `source`); a missing file, a bad line or a missing field is refused naming the option, file and line (never
    the text)."""
    from ..data.lume import DataValidationError, _read_jsonl_lines

    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{option}: file not found: {path}.")
    out = []
    for lineno, row in _read_jsonl_lines(path):
        for name in ("question", "answer"):
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                raise DataValidationError(f"{option} {path}, line {lineno}: field '{name}' must be a non-empty string"
                                          + (f", got {type(value).__name__}" if value is not None else
                                             " (it is missing)") + ".")
        source = row.get("source")
        out.append({"question": row["question"], "answer": row["answer"],
                    **({"source": str(source)} if source is not None else {})})
    if not out:
        raise DataValidationError(f"{option} {path} is empty: it holds no questions.")
    return out


def general_scores(model: torch.nn.Module, tokenizer: Any, documents: Sequence[str] | None = None,
                   questions: Sequence[Mapping[str, str]] | None = None, mmlu: Mapping[str, Any] | None = None,
                   max_new_tokens: int = 24, batch_size: int = 16) -> dict[str, float]:
    """`general/ppl` (from `documents`), `general/knowledge` (from `questions`) and `general/mmlu` (`mmlu`: keyword
    arguments of `evaluate_mmlu`, e.g. `data_dir` and `limit`), for whichever parts are given."""
    scores: dict[str, float] = {}
    if documents:
        scores["general/ppl"] = perplexity(model, tokenizer, documents, batch_size=max(1, batch_size // 2))
    if questions:
        scores.update(general_knowledge(model, tokenizer, questions, max_new_tokens, batch_size))
    if mmlu:
        from .mmlu import evaluate_mmlu

        scores["general/mmlu"] = evaluate_mmlu(model, tokenizer, **{"num_fewshot": 0, **mmlu})["average_acc"]
    return scores


def general_shortfalls(before: Mapping[str, float], after: Mapping[str, float], drop: float | None,
                       rise: float | None) -> list[str]:
    """The `general/...` keys measured before and after on which the model fell short: `general/knowledge` and
    `general/mmlu` lower by more than `drop`, `general/ppl` higher by more than the share `rise` (None: that bound
    is not checked)."""
    out = []
    for key, bound in (("general/knowledge", drop), ("general/mmlu", drop), ("general/ppl", rise)):
        b, a = before.get(key), after.get(key)
        if bound is None or b is None or a is None:
            continue
        if (a > (1 + bound) * b) if key == "general/ppl" else (b - a > bound):
            out.append(key)
    return out
