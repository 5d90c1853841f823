"""The LUME evaluation of one model, split across processes: used by the callbacks and `hf-unlearn evaluate`.

Rows and documents are split between processes in contiguous chunks (`split_between_processes`), each process
scores its chunk, and `gather_object` puts the pieces back in order, so every process ends with the same, complete
results and the scores equal a single-process run. MMLU runs on the main process (lm-eval drives its own batching)
and is broadcast.

When the parameters are sharded (DeepSpeed ZeRO-3, FSDP) every forward pass is collective: each process gathers the
weights from the others, so all of them must make the same number of forward passes. Then every chunk is padded to
the same number of rows, generation keeps the processes in step round by round (`generate_completions(lockstep=)`),
and MMLU runs on every process with the same questions (lm-eval sees one process each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .metrics import aggregate_results, evaluate_mmlu, generate_completions, lume_scores_from_generations
from .metrics.lume import knowledge_stop_chars
from .metrics.keys import flatten_scores  # noqa: F401  (re-exported: the callbacks and benchmarks use it here)
from .metrics.mia.score import mia_scores_from_stats
from .metrics.mia.token_stats import document_token_stats


def _distributed(accelerator) -> bool:
    return accelerator is not None and accelerator.num_processes > 1


def _sharded(accelerator) -> bool:
    """Whether the model's parameters are split across processes, so that every forward pass is collective."""
    if not _distributed(accelerator):
        return False
    from accelerate.utils import DistributedType
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or accelerator.distributed_type == DistributedType.FSDP


def _max_over_processes(accelerator):
    """`n -> the largest n over all processes` (a collective: every process must call it)."""
    import torch.distributed as dist

    def largest(n: int) -> int:
        box = torch.tensor([n], dtype=torch.long, device=accelerator.device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        return int(box.item())

    return largest


def map_across_processes(fn, items: Sequence, accelerator=None) -> list:
    """`fn(chunk)` on this process's contiguous chunk of `items`; the results of all chunks, in order, everywhere."""
    if not _distributed(accelerator):
        return list(fn(list(items)))
    from accelerate.utils import gather_object

    items = list(items)
    with accelerator.split_between_processes(items) as chunk:
        chunk = list(chunk)
    if _sharded(accelerator) and items:
        # Every process must make the same forward passes: chunks differ by one row (or are empty when there are
        # fewer rows than processes), so each is padded to the longest with copies of the first row, whose results
        # are dropped. `fn` batches a fixed number of rows per forward pass, so equal rows give equal passes.
        size = -(-len(items) // accelerator.num_processes)
        local = list(fn(chunk + [items[0]] * (size - len(chunk))))[: len(chunk)]
    else:
        local = list(fn(chunk)) if chunk else []
    return gather_object(local)


def lume_generations(
    model,
    tokenizer,
    rows: Sequence[Mapping],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    accelerator=None,
    chat_template: bool = False,
    max_prompt_tokens: int | None = None,
    scoring_only: bool = False,
) -> list[str]:
    """Greedy completions of each row's `input` (wrapped in the tokenizer's chat template with
    `chat_template=True`; cut to its last `max_prompt_tokens` tokens if given), in row order.

    `scoring_only=True`: the texts are only scored, so a question row stops once no continuation can match its answer
    (`knowledge_stop_chars`; the scores are those of the full texts, the texts of such rows are cut short)."""
    stops = knowledge_stop_chars(rows) if scoring_only else [None] * len(rows)
    # Equal chunks are not enough for generation: its rounds drop finished rows, so processes also agree on the
    # number of `generate` calls in each round.
    lockstep = _max_over_processes(accelerator) if _sharded(accelerator) else None
    return map_across_processes(
        lambda chunk: generate_completions(
            model, tokenizer, [row["input"] for row, _ in chunk], max_new_tokens=max_new_tokens,
            batch_size=batch_size, lockstep=lockstep, chat_template=chat_template,
            max_prompt_tokens=max_prompt_tokens, stop_after_chars=[stop for _, stop in chunk],
            drafts=[row.get("output") for row, _ in chunk],  # the reference as the draft: the same greedy texts
        ),
        list(zip(rows, stops)),
        accelerator,
    )


def evaluate_lume(
    model,
    tokenizer,
    forget_rows: Sequence[Mapping],
    retain_rows: Sequence[Mapping],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    accelerator=None,
    return_generations: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Regurgitation and knowledge per split and task, and the task score (the script's key names)."""
    scoring_only = not return_generations  # question rows stop once their score is settled (the same scores)
    forget = lume_generations(model, tokenizer, forget_rows, max_new_tokens, batch_size, accelerator, chat_template,
                              scoring_only=scoring_only)
    retain = lume_generations(model, tokenizer, retain_rows, max_new_tokens, batch_size, accelerator, chat_template,
                              scoring_only=scoring_only)
    result = lume_scores_from_generations(forget_rows, forget, retain_rows, retain)
    if return_generations:
        result["generations"] = {"forget": forget, "retain": retain}
    return result


def evaluate_mia(
    model, tokenizer, members: Sequence[str], nonmembers: Sequence[str], batch_size: int = 8, accelerator=None
) -> dict[str, Any]:
    """The loss, zlib, Min-K% and Min-K%++ attacks and the task's MIA score, from one batched pass."""
    documents = list(members) + list(nonmembers)
    stats = map_across_processes(
        lambda chunk: document_token_stats(model, tokenizer, chunk, batch_size=batch_size), documents, accelerator
    )
    n = len(members)
    return mia_scores_from_stats(stats[:n], stats[n:], documents[:n], documents[n:])


def evaluate_mmlu_everywhere(model, tokenizer, accelerator=None, **mmlu_kwargs) -> dict[str, Any]:
    """`evaluate_mmlu` on the main process, its summary broadcast to every process.

    With sharded parameters every process runs it on the same questions, in the same batches (lm-eval is handed
    an in-memory model and then runs as one process: no split), so the forward passes stay collective; the main
    process's summary is broadcast (lm-eval returns its results on `LOCAL_RANK` 0 only).
    """
    if not _distributed(accelerator):
        return evaluate_mmlu(model, tokenizer, **mmlu_kwargs)
    from accelerate.utils import broadcast_object_list

    run_here = accelerator.is_main_process or _sharded(accelerator)
    box = [evaluate_mmlu(model, tokenizer, **mmlu_kwargs) if run_here else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


@torch.no_grad()
def evaluate_model(
    model,
    tokenizer,
    forget_rows: Sequence[Mapping] | None = None,
    retain_rows: Sequence[Mapping] | None = None,
    mia_members: Sequence[str] | None = None,
    mia_nonmembers: Sequence[str] | None = None,
    mmlu: Mapping[str, Any] | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    accelerator=None,
    return_generations: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Everything that is given: LUME rows, MIA documents, MMLU (`mmlu` = `evaluate_mmlu` keyword arguments).

    Returns the task script's layout (`aggregate_results`), with `aggregate-score` -1 unless all three are there.
    `chat_template=True` generates the LUME answers from each `input` wrapped in the tokenizer's chat template (for
    instruct models) instead of from the raw `input` (the task script's way); MIA and MMLU are unaffected.
    """
    lume = {}
    if forget_rows is not None and retain_rows is not None:
        lume = evaluate_lume(
            model, tokenizer, forget_rows, retain_rows, max_new_tokens, batch_size, accelerator, return_generations,
            chat_template,
        )
    mia = None
    if mia_members is not None and mia_nonmembers is not None:
        mia = evaluate_mia(model, tokenizer, mia_members, mia_nonmembers, batch_size=max(1, batch_size // 2),
                           accelerator=accelerator)
    mmlu_result = evaluate_mmlu_everywhere(model, tokenizer, accelerator, **mmlu) if mmlu is not None else None
    results = aggregate_results(lume, mia, mmlu_result) if lume else {**(mia or {})}
    if mmlu_result is not None:
        results["mmlu_average"] = mmlu_result["average_acc"]
        results["mmlu_subject_acc"] = mmlu_result["subject_acc"]
    if return_generations and "generations" in lume:
        results["generations"] = lume["generations"]
    return results
