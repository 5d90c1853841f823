"""Metrics of the LUME benchmark, each a plain function of (model, tokenizer, data).

- `generation`: greedy completions as the task's script makes them, batched (`generate_completions`) or one at a
  time (`generate_one_at_a_time`, the reference).
- `lume`: regurgitation (ROUGE-L recall) and knowledge (exact match) per split and task, and the task score.
- `mia`: membership-inference attacks (the task's loss attack, zlib, Min-K%, Min-K%++) and the MIA score.
- `mmlu`: MMLU accuracy through lm-eval, online or from local files.
- `aggregate`: the final score and the task's output layout.
"""

from hf_unlearn.metrics.aggregate import MMLU_THRESHOLD, aggregate_results, check_mmlu, final_score
from hf_unlearn.metrics.generation import decode_like_task, generate_completions, generate_one_at_a_time
from hf_unlearn.metrics.lume import (
    aggregated_terms,
    knowledge_score,
    lume_scores_from_generations,
    regurgitation_score,
    row_kind,
    score_lume,
    split_scores,
    task_score,
)
from hf_unlearn.metrics.mia import (
    document_losses_one_at_a_time,
    document_token_stats,
    membership_auc,
    mia_score,
    mia_scores_from_stats,
    score_mia,
)
from hf_unlearn.metrics.mmlu import evaluate_mmlu, write_mmlu_tasks

__all__ = [
    "MMLU_THRESHOLD",
    "aggregate_results",
    "aggregated_terms",
    "check_mmlu",
    "decode_like_task",
    "document_losses_one_at_a_time",
    "document_token_stats",
    "evaluate_mmlu",
    "final_score",
    "generate_completions",
    "generate_one_at_a_time",
    "knowledge_score",
    "lume_scores_from_generations",
    "membership_auc",
    "mia_score",
    "mia_scores_from_stats",
    "regurgitation_score",
    "row_kind",
    "score_lume",
    "score_mia",
    "split_scores",
    "task_score",
    "write_mmlu_tasks",
]
