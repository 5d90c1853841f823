"""The LUME task score: regurgitation (ROUGE-L recall) and knowledge (exact match) per split and task.

Follows the organisers' final evaluation script (see docs/LUME.md):

- a row's kind comes from its id: `id[:-1].endswith("sc")` is sentence completion, else `id[:-1].endswith("qa")`
  is a question, any other row is not scored (Task1 ids carry literal `"` characters, which is fine: only the end
  of the id is read);
- regurgitation is the ROUGE-L **recall** of the generation against the expected output, with stemming;
- knowledge is the exact match of the stripped, lower-cased texts;
- per split, per task: the mean of each; the forget means become `1 - x`; the task score is the harmonic mean of
  the twelve numbers (0 when any is 0).

The scoring functions take generations, so they can be checked on hand-made inputs; `score_lume` makes the
generations and scores them.

Missing kinds: when a task has rows in a split but none of one kind, the script's pandas `groupby().mean()` gives
NaN for that cell and NaN poisons the harmonic mean. Here such a cell is reported as `None` and left out of
`aggregated-terms`, so the task score is the harmonic mean of the terms that exist (a task absent from a split
gives no terms at all, as in the script). With all twelve cells present, the result is the script's.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch

from hf_unlearn.metrics.generation import DEFAULT_BATCH_SIZE, generate_completions, generate_one_at_a_time

SENTENCE_COMPLETION = "sc"
QUESTION_ANSWERING = "qa"
REGURGITATION = "regurgitation-score"
KNOWLEDGE = "knowledge-score"
SPLITS = ("forget", "retain")


def row_kind(row_id: str) -> str | None:
    """`"sc"`, `"qa"` or None (not scored), read from the id exactly as the task's script does."""
    stem = row_id[:-1]
    if stem.endswith(SENTENCE_COMPLETION):
        return SENTENCE_COMPLETION
    if stem.endswith(QUESTION_ANSWERING):
        return QUESTION_ANSWERING
    return None


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # The script asks for rouge1 too (it logs it); the score only uses rougeL.
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def regurgitation_score(expected: str, generated: str) -> float:
    """ROUGE-L recall (with stemming) of `generated` against `expected`."""
    return _rouge_scorer().score(target=expected, prediction=generated)["rougeL"].recall


def knowledge_score(expected: str, generated: str) -> int:
    """1 when the whole continuation equals the answer after `strip().lower()`, else 0."""
    return int(expected.strip().lower() == generated.strip().lower())


def knowledge_stop_chars(rows: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """Per row, a length past which its generation can no longer change its score (None: no such length).

    A question row scores 1 only when its whole continuation, stripped and lower-cased, equals the answer. Decoding
    more tokens only appends text (the tokenizer's clean-up can drop a space at the joint, not more), and lower-casing
    never shortens a string and lengthens one at most 3 times, so once the stripped text is longer than 3 times the
    stripped answer plus a margin, the row scores 0 whatever comes next. Sentence-completion rows (ROUGE-L recall can
    still rise) and unscored rows get None. For `generate_completions(stop_after_chars=)`.
    """
    return [3 * len(row["output"].strip()) + 16 if row_kind(str(row.get("id", ""))) == QUESTION_ANSWERING else None
            for row in rows]


def score_row(row: Mapping[str, Any], generated: str) -> tuple[str | None, float | None]:
    """(kind, score) of one row given its generation; (None, None) for a row that is not scored."""
    kind = row_kind(row["id"])
    if kind == SENTENCE_COMPLETION:
        return kind, regurgitation_score(row["output"], generated)
    if kind == QUESTION_ANSWERING:
        return kind, float(knowledge_score(row["output"], generated))
    return None, None


KNOWN_TASKS = ("Task1", "Task2", "Task3")


def scoring_warnings(rows: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """What would make a split's scores mean less than they seem, by count and row index only (never text): rows
    the task's script does not score (an id not ending in `sc<N>`/`qa<N>`), repeated ids (their rows count twice)
    and tasks other than Task1-3 (scored, but the task score then has other terms than the task's twelve)."""
    out = []
    unscored = [i for i, r in enumerate(rows) if row_kind(str(r.get("id", ""))) is None]
    if unscored:
        out.append(f"{name}: {len(unscored)} of {len(rows)} rows are not scored (their id does not end in sc<N> or "
                   f"qa<N>): rows {', '.join(map(str, unscored[:10]))}{' ...' if len(unscored) > 10 else ''}")
    seen: dict[str, int] = {}
    for r in rows:
        seen[str(r.get("id"))] = seen.get(str(r.get("id")), 0) + 1
    repeated = sum(n - 1 for n in seen.values() if n > 1)
    if repeated:
        out.append(f"{name}: {repeated} rows repeat an earlier row's id; each copy is scored")
    unknown = sorted({str(r.get("task")) for r in rows} - set(KNOWN_TASKS))
    if unknown:
        count = sum(str(r.get("task")) not in KNOWN_TASKS for r in rows)
        out.append(f"{name}: {count} rows have a task other than {', '.join(KNOWN_TASKS)} ({len(unknown)} other "
                   "task name(s)); they are scored as tasks of their own")
    return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def split_scores(rows: Sequence[Mapping[str, Any]], generations: Sequence[str]) -> dict[str, Any]:
    """One split's scores in the script's layout.

    Returns `{"overall-regurgitation-score": x, "overall-knowledge-score": y, "Task1": {"regurgitation-score": ...,
    "knowledge-score": ...}, ...}`: the overall values are means over all scored rows of the split (not inverted,
    even for forget); tasks appear in sorted order, as pandas' `groupby` gives them. A mean over no rows is None.
    """
    if len(rows) != len(generations):
        raise ValueError(f"{len(rows)} rows but {len(generations)} generations")
    by_task: dict[str, dict[str, list[float]]] = {}
    overall: dict[str, list[float]] = {SENTENCE_COMPLETION: [], QUESTION_ANSWERING: []}
    for row, generated in zip(rows, generations):
        kind, score = score_row(row, generated)
        # A task with only unscored rows still appears (with None), as the script's groupby keeps it.
        cells = by_task.setdefault(row["task"], {SENTENCE_COMPLETION: [], QUESTION_ANSWERING: []})
        if kind is not None:
            cells[kind].append(score)
            overall[kind].append(score)
    result: dict[str, Any] = {
        "overall-regurgitation-score": _mean(overall[SENTENCE_COMPLETION]),
        "overall-knowledge-score": _mean(overall[QUESTION_ANSWERING]),
    }
    for task in sorted(by_task):
        result[task] = {
            REGURGITATION: _mean(by_task[task][SENTENCE_COMPLETION]),
            KNOWLEDGE: _mean(by_task[task][QUESTION_ANSWERING]),
        }
    return result


def aggregated_terms(forget: Mapping[str, Any], retain: Mapping[str, Any]) -> list[float]:
    """The terms of the task score, in the script's order: forget tasks (inverted) then retain tasks.

    Each task gives `[regurgitation, knowledge]`; a cell that is None (no rows of that kind) is left out.
    """
    terms: list[float] = []
    for scores, invert in ((forget, True), (retain, False)):
        for cells in scores.values():
            if not isinstance(cells, Mapping):
                continue  # the overall-* entries
            for key in (REGURGITATION, KNOWLEDGE):
                value = cells[key]
                if value is not None:
                    terms.append(1.0 - value if invert else float(value))
    return terms


def task_score(terms: Sequence[float]) -> float:
    """The harmonic mean of the terms; 0 when any term is 0 (as `statistics.harmonic_mean` gives)."""
    if not terms:
        raise ValueError("no terms to aggregate: the forget and retain rows hold no scored row")
    return float(statistics.harmonic_mean(terms))


def lume_scores_from_generations(
    forget_rows: Sequence[Mapping[str, Any]],
    forget_generations: Sequence[str],
    retain_rows: Sequence[Mapping[str, Any]],
    retain_generations: Sequence[str],
) -> dict[str, Any]:
    """The task score and its parts, with the script's key names, from generations already made.

    Keys: `forget-set`, `retain-set` (see `split_scores`), `aggregated-terms` and `harmonic-mean-task-aggregate`.
    """
    forget = split_scores(forget_rows, forget_generations)
    retain = split_scores(retain_rows, retain_generations)
    terms = aggregated_terms(forget, retain)
    return {
        "forget-set": forget,
        "retain-set": retain,
        "aggregated-terms": terms,
        "harmonic-mean-task-aggregate": task_score(terms),
    }


def score_lume(
    model: torch.nn.Module,
    tokenizer: Any,
    forget_rows: Sequence[Mapping[str, Any]],
    retain_rows: Sequence[Mapping[str, Any]],
    max_new_tokens: int = 256,
    batch_size: int = DEFAULT_BATCH_SIZE,
    one_at_a_time: bool = False,
    return_generations: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Generate greedy completions of every row's `input` and score them (see `lume_scores_from_generations`).

    `one_at_a_time=True` uses the task script's unbatched path instead of the batched one. With
    `return_generations=True` the result also holds `generations: {"forget": [...], "retain": [...]}` (texts in row
    order): forget-set text, so keep it in memory or in a file the user asked for, never in logs.
    `chat_template=True` generates from each `input` wrapped in the tokenizer's chat template instead of the raw
    `input` the task's script uses (see `hf_unlearn.metrics.generation.prompt_token_ids`).
    """
    generations = {}
    for split, rows in zip(SPLITS, (forget_rows, retain_rows)):
        prompts = [row["input"] for row in rows]
        if one_at_a_time:
            generations[split] = generate_one_at_a_time(
                model, tokenizer, prompts, max_new_tokens=max_new_tokens, chat_template=chat_template
            )
        else:
            generations[split] = generate_completions(
                model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                chat_template=chat_template,
                # only scored: question rows stop once their score is settled (the same scores, shorter texts)
                stop_after_chars=None if return_generations else knowledge_stop_chars(rows),
                drafts=[row.get("output") for row in rows],  # proved in one pass where the model writes it back
            )
    result = lume_scores_from_generations(forget_rows, generations["forget"], retain_rows, generations["retain"])
    if return_generations:
        result["generations"] = generations
    return result
